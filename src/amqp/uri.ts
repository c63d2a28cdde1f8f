/**
 * Broker URIs: masking them for logs, and turning one plus the settings
 * into what amqplib's `connect` takes.
 */
import type { SocketOptions } from 'amqplib';

/**
 * The URI with its password replaced by `***`, for logs and error messages.
 * Never throws: text that is not a URI is masked by pattern.
 */
export function maskUri(uri: string): string {
  try {
    const url = new URL(uri);
    if (url.password === '') return uri;
    url.password = '***';
    return url.toString();
  } catch {
    return uri.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');
  }
}

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
