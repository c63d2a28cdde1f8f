/** Listen addresses, as operators write them (Go's net.Listen form), which ones are loopback, and a free port. */
import { createServer } from 'node:net';

/** Where an HTTP listener binds. */
export interface ListenConfig {
  /** An IP address or host name; 127.0.0.1 unless configured. */
  host: string;
  /** TCP port; 0 picks a free one (tests). */
  port: number;
}


/** Loopback addresses: listeners there are reachable from this host only (every process on it: jobs of the local and ssh backends, containers on the host network). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * `host:port`, `:port` or `[v6]:port`, as Go's net.Listen takes it; a
 * missing host means 127.0.0.1 (Go would listen on every interface: write
 * `0.0.0.0:8080` for that).
 */
export function parseListenAddress(text: string): ListenConfig {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new Error('must be host:port, e.g. 127.0.0.1:8080 (or :8080 for 127.0.0.1)');
  const host = match[1] ?? match[2] ?? '';
  return { host: host === '' ? '127.0.0.1' : host, port };
}

/** The text of a listen address as an operator writes it. */
export function formatListenAddress({ host, port }: ListenConfig): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}


/**
 * A port nothing listens on at `host` right now (the kernel picks it): a
 * connection to it is refused until someone binds it, a moment later.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('the kernel gave no port'));
      });
    });
  });
}
