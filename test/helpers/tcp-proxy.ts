/**
 * A TCP proxy on loopback between the worker and RabbitMQ, for the
 * fault-injection suite: it forwards bytes both ways until told to cut the
 * connections (a reset, as when a broker node dies), stall them (nothing
 * moves, as when a network partition leaves the sockets open: only
 * heartbeats notice), black-hole what the worker sends (its publishes are
 * lost on the way, unconfirmed), or refuse new ones (the broker is down).
 */
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

interface Pair {
  client: Socket;
  upstream: Socket;
}

export class TcpProxy {
  private readonly pairs = new Set<Pair>();
  private stalled = false;
  private refusing = false;
  /** Connections the proxy forwarded, ever (refused ones not counted). */
  accepted = 0;
  /** Bytes from the worker dropped by `blackHole`. */
  swallowed = 0;
  private waiters: Array<() => void> = [];
  private refusedListeners: Array<() => void> = [];

  private constructor(
    private readonly server: Server,
    private readonly target: { host: string; port: number },
  ) {
    server.on('connection', (client) => this.onConnection(client));
  }

  /** A proxy on 127.0.0.1 (a free port) to `target`. */
  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server, target);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** `uri` (an amqp:// URL) with its host and port replaced by the proxy's. */
  uri(uri: string): string {
    const url = new URL(uri);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  /** Connections open through the proxy now. */
  get open(): number {
    return this.pairs.size;
  }

  /** Reset every open connection (new ones are still let through unless `refuse`d). */
  cut(): void {
    for (const pair of [...this.pairs]) {
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
      this.pairs.delete(pair);
    }
  }

  /** Stop forwarding, both ways, on open and new connections: the sockets stay open and say nothing. */
  stall(): void {
    this.stalled = true;
    for (const pair of this.pairs) hold(pair);
  }

  /**
   * On open connections, read what the worker sends and drop it, and pass
   * nothing back: its publishes vanish unconfirmed. Ended by `cut` (the
   * connections go); new connections are forwarded.
   */
  blackHole(): void {
    for (const pair of this.pairs) {
      hold(pair);
      pair.client.on('data', (chunk: Buffer) => {
        this.swallowed += chunk.length;
        this.wake();
      });
      pair.client.resume();
    }
  }

  /** Resolves once `bytes` from the worker have been dropped in all. */
  untilSwallowed(bytes: number, signal: AbortSignal): Promise<void> {
    return this.until(() => this.swallowed >= bytes, signal);
  }

  /** Call `listener` once, on the next connection refused. */
  onRefused(listener: () => void): void {
    this.refusedListeners.push(listener);
  }

  /** Refuse new connections (reset at once) until `resume`. */
  refuse(): void {
    this.refusing = true;
  }

  /** Forward again: undo `stall` and `refuse`. */
  resume(): void {
    this.stalled = false;
    this.refusing = false;
    for (const pair of this.pairs) forward(pair);
  }

  /** Resolves once `count` connections have been forwarded in all. */
  untilAccepted(count: number, signal: AbortSignal): Promise<void> {
    return this.until(() => this.accepted >= count, signal);
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: Socket): void {
    if (this.refusing) {
      client.resetAndDestroy();
      for (const listener of this.refusedListeners.splice(0)) listener();
      return;
    }
    const upstream = connect(this.target.port, this.target.host);
    const pair: Pair = { client, upstream };
    this.pairs.add(pair);
    const drop = (): void => {
      if (!this.pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', drop);
      socket.on('close', drop);
    }
    if (this.stalled) hold(pair);
    else forward(pair);
    this.accepted++;
    this.wake();
  }

  private async until(done: () => boolean, signal: AbortSignal): Promise<void> {
    while (!done()) {
      signal.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        this.waiters.push(() => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
  }

  private wake(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }
}

function forward({ client, upstream }: Pair): void {
  client.pipe(upstream);
  upstream.pipe(client);
}

/** Unpipe (so nothing resumes the flow on 'drain') and stop reading: bytes wait in the kernel buffers. */
function hold({ client, upstream }: Pair): void {
  client.unpipe(upstream);
  upstream.unpipe(client);
  client.pause();
  upstream.pause();
}
