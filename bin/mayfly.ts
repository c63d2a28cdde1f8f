#!/usr/bin/env node
/**
 * `mayfly`: the executable. Parses flags, loads the configuration (stopping
 * with a message that names the variable when it is wrong), starts the
 * worker and hands it the signals (src/lifecycle/signals.ts: SIGTERM and
 * SIGINT drain, a second one stops at once; SIGUSR1/2, SIGTTIN/TTOU).
 * Exits 0 after a drain or stop, 2 when it could not start. A lost broker
 * is not an exit: the worker reconnects.
 */
import { parseArgs } from 'node:util';
import { backends } from '../backends/index.js';
import { echoConfig, listBackendProviders } from '../src/config/echo.js';
import { loadConfig } from '../src/config/load.js';
import { errorMessage, isMayflyError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { handleSignals } from '../src/lifecycle/signals.js';
import { startWorker } from '../src/main.js';
import { VERSION } from '../src/version.js';

const USAGE = `Usage: mayfly [--echo-config | --list-backend-providers | --version | --help]

Runs CI jobs from a queue (RabbitMQ, or a directory), each on a fresh
instance of a backend, until SIGTERM or SIGINT drains it. Without an option
it starts the worker.

  --echo-config              print the effective configuration as export lines (secrets masked) and exit
  --list-backend-providers   list the backends and their settings and exit
  -v, --version              print the version and exit
  -h, --help                 print this help and exit

Every setting is an environment variable (TRAVIS_WORKER_*, as travis-ci/worker's):
config.example.env lists them with their defaults, docs/configuration.md
describes them, and docs/operations.md covers signals, the control API,
metrics and the logs. The worker log is JSON lines, readable when stdout is
a terminal.
`;

/** The command line's options; an unknown one is an error that says where the known ones are. */
function parseOptions() {
  try {
    return parseArgs({
      options: {
        'echo-config': { type: 'boolean' },
        'list-backend-providers': { type: 'boolean' },
        version: { type: 'boolean', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new Error(`${errorMessage(err)} (mayfly --help lists the options)`, { cause: err });
  }
}

async function main(): Promise<number> {
  const { values } = parseOptions();
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`mayfly ${VERSION}\n`);
    return 0;
  }
  if (values['list-backend-providers']) {
    process.stdout.write(listBackendProviders(backends));
    return 0;
  }
  const config = loadConfig(backends);
  if (values['echo-config']) {
    process.stdout.write(echoConfig(config, backends));
    return 0;
  }

  const logger = createLogger({ level: config.logLevel });
  if (config.ignoredSettings.length > 0) {
    logger.warn({ settings: config.ignoredSettings }, 'these travis-ci/worker settings are accepted but have no effect in mayfly');
  }
  const worker = await startWorker(config, backends, logger);
  const stopHandling = handleSignals(worker, logger);
  try {
    await worker.stopped;
    return 0;
  } finally {
    stopHandling();
    logger.flush();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
    // Everything is closed by now; if some handle still holds the event
    // loop, don't let it hold the host's process manager too.
    setTimeout(() => process.exit(code), 10_000).unref();
  },
  (err: unknown) => {
    // Config errors name the variable; anything else is a startup failure.
    process.stderr.write(`mayfly: ${isMayflyError(err) ? err.message : errorMessage(err)}\n`);
    process.exitCode = 2;
  },
);
