#!/usr/bin/env node
/**
 * `mayfly`: the executable. Reads the command line (every setting is also
 * a flag, src/config/cli.ts), loads the configuration (stopping with a
 * message that names the variable when it is wrong), starts the worker and
 * hands it the signals (src/lifecycle/signals.ts: SIGTERM and SIGINT drain,
 * a second one stops at once; SIGUSR1/2, SIGTTIN/TTOU). Exits 0 after a
 * drain or stop, 2 when it could not start. A lost broker is not an exit:
 * the worker reconnects.
 */
import { backends } from '../backends/index.js';
import { parseCommandLine, readCommands, usage } from '../src/config/cli.js';
import { echoConfig, listBackendProviders } from '../src/config/echo.js';
import { loadConfig } from '../src/config/load.js';
import { errorMessage, isMayflyError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { handleSignals } from '../src/lifecycle/signals.js';
import { startWorker } from '../src/main.js';
import { VERSION } from '../src/version.js';

async function main(): Promise<number> {
  const { flags, help, version } = parseCommandLine(process.argv.slice(2));
  if (help) {
    process.stdout.write(usage());
    return 0;
  }
  if (version) {
    process.stdout.write(`mayfly ${VERSION}\n`);
    return 0;
  }
  const commands = readCommands({ env: process.env, flags });
  if (commands.listBackendProviders) {
    process.stdout.write(listBackendProviders(backends));
    return 0;
  }
  const config = loadConfig(backends, process.env, flags);
  if (commands.echoConfig) {
    process.stdout.write(echoConfig(config, backends));
    return 0;
  }

  const logger = createLogger({ level: config.logLevel });
  for (const { variables, message } of config.warnings) logger.warn({ settings: variables }, message);
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
