/** Where and how to reach an SSH server. */
export interface SshTarget {
  host: string;
  port: number;
  username: string;
  /** Private key text (OpenSSH or PEM); tried before `password` when both are set. */
  privateKey?: string | Buffer;
  password?: string;
}

/** `host:port` for log lines and error messages (brackets around IPv6 literals). */
export function describeTarget(target: Pick<SshTarget, 'host' | 'port'>): string {
  return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}
