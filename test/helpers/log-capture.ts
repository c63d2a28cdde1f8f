/**
 * A real pino logger whose JSON lines the test can read back, and wait for
 * ("a line matching this appeared") instead of waiting for time.
 */
import { createLogger, type Logger } from '../../src/logger.js';

export type LogLine = Record<string, unknown> & { level: string; msg?: string };

export interface CapturedLog {
  logger: Logger;
  readonly lines: LogLine[];
  /** Resolves with the first line (already written or to come) that matches; rejects when `signal` aborts. */
  waitFor(match: (line: LogLine) => boolean, signal: AbortSignal): Promise<LogLine>;
}

export function captureLog(): CapturedLog {
  const lines: LogLine[] = [];
  const waiters = new Set<{ match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }>();
  const logger = createLogger({
    pretty: false,
    level: 'debug',
    destination: {
      write(text: string) {
        for (const raw of text.split('\n')) {
          if (raw === '') continue;
          const line = JSON.parse(raw) as LogLine;
          lines.push(line);
          for (const waiter of [...waiters]) {
            if (waiter.match(line)) {
              waiters.delete(waiter);
              waiter.resolve(line);
            }
          }
        }
      },
    },
  });
  return {
    logger,
    lines,
    waitFor(match, signal) {
      const found = lines.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const waiter = {
          match,
          resolve: (line: LogLine) => {
            signal.removeEventListener('abort', onAbort);
            resolve(line);
          },
        };
        const onAbort = (): void => {
          waiters.delete(waiter);
          reject(signal.reason);
        };
        if (signal.aborted) return onAbort();
        waiters.add(waiter);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    },
  };
}
