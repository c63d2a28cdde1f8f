/**
 * A broker URI plus the settings, turned into what amqplib's `connect`
 * takes. (Masking a URI for logs is `maskUrl` in src/redact.ts.)
 */
import type { SocketOptions } from 'amqplib';

/** How long the TCP (and TLS) handshake plus the AMQP opening may take. */
export const CONNECT_TIMEOUT_MS = 30_000;

export interface ConnectTarget {
  /** The URI with the heartbeat set, as amqplib reads it from the query. */
  url: string;
  socketOptions: SocketOptions;
}

export interface ConnectSettings {
  /** Heartbeat period in ms; sent to the broker in whole seconds, 0 disables heartbeats. */
  heartbeatMs: number;
  /** PEM text of a certificate to trust (amqps only). */
  tlsCert?: string;
  /** Accept any server certificate (amqps only). */
  insecure: boolean;
  /** Shown as the connection's name in the management UI (client property `connection_name`). */
  connectionName: string;
}

export function connectTarget(uri: string, settings: ConnectSettings): ConnectTarget {
  const url = new URL(uri);
  // amqplib takes the heartbeat (seconds) only from the URI's query when given a string URI.
  url.searchParams.set('heartbeat', String(Math.round(settings.heartbeatMs / 1000)));
  const socketOptions: SocketOptions = {
    timeout: CONNECT_TIMEOUT_MS,
    clientProperties: { connection_name: settings.connectionName },
  };
  if (url.protocol === 'amqps:') {
    if (settings.tlsCert) socketOptions.ca = [settings.tlsCert];
    socketOptions.rejectUnauthorized = !settings.insecure;
  }
  return { url: url.toString(), socketOptions };
}
