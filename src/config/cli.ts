/**
 * mayfly's command line, travis-ci/worker's: every core setting is also a
 * flag named after its variable (`TRAVIS_WORKER_AMQP_URI` is `--amqp-uri`),
 * which wins over the environment; a boolean one may stand alone
 * (`--debug`) or take a value (`--debug=false`). `--echo-config` and
 * `--list-backend-providers` are read from the environment too
 * (`TRAVIS_WORKER_ECHO_CONFIG=true`), as travis reads them. Provider
 * settings have no flags, in travis neither.
 */
import { parseArgs } from 'node:util';
import { ConfigError, errorMessage } from '../errors.js';
import { closestName, parseFlag } from './env.js';
import { IGNORED_SETTINGS } from './ignored.js';
import { isSwitch } from './leaves.js';
import { CORE_LEAVES } from './schema.js';
import { flagName, settingText, type SettingInput } from './sources.js';

/** What mayfly does instead of running, besides `--help` and `--version`; travis reads them from the environment too. */
const COMMANDS = {
  echoConfig: { env: 'TRAVIS_WORKER_ECHO_CONFIG', doc: 'Print the effective configuration as export lines (secrets masked) and exit' },
  listBackendProviders: { env: 'TRAVIS_WORKER_LIST_BACKEND_PROVIDERS', doc: 'List the backends and their settings and exit' },
} as const;

export const COMMAND_VARIABLES: readonly { env: string; doc: string }[] = Object.values(COMMANDS);

/** A flag standing for a variable. */
interface FlagSpec {
  variable: string;
  doc: string;
  /** May stand alone, meaning true. */
  switch: boolean;
}

function flagSpecs(): FlagSpec[] {
  return [
    ...CORE_LEAVES.flatMap(({ node }) => [
      { variable: node.env, doc: node.doc, switch: isSwitch(node) },
      ...(node.fileEnv ? [{ variable: node.fileEnv.env, doc: node.fileEnv.doc, switch: false }] : []),
    ]),
    ...COMMAND_VARIABLES.map(({ env, doc }) => ({ variable: env, doc, switch: true })),
    ...IGNORED_SETTINGS.map(({ name, why, switch: bare }) => ({ variable: name, doc: `No effect: ${why}`, switch: bare === true })),
  ];
}

const FLAGS = new Map(flagSpecs().map((spec) => [flagName(spec.variable), spec]));

/** The command line, read. */
export interface CommandLine {
  /** Setting texts given as flags, keyed by the variable each stands for. */
  flags: Record<string, string>;
  help: boolean;
  version: boolean;
}

/**
 * Read `args` (without node and the script). Throws a `ConfigError` for an
 * unknown flag (naming the closest known one), a flag without its value, or
 * an argument that is not a flag; the last of a repeated flag wins.
 */
export function parseCommandLine(args: readonly string[]): CommandLine {
  const options = Object.fromEntries(
    [...FLAGS].map(([name, spec]) => [name, { type: spec.switch ? ('boolean' as const) : ('string' as const) }]),
  );
  // Not strict: node refuses `--debug=false`, which Go's flag package (travis') takes; each token is checked below.
  const { tokens } = parseArgs({
    // Go's flag package takes `-pool-size` for `--pool-size` too.
    args: args.map((arg) => (/^-[a-z][a-z0-9-]+/.test(arg) ? `-${arg}` : arg)),
    options: { ...options, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } },
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const result: CommandLine = { flags: {}, help: false, version: false };
  for (const token of tokens) {
    if (token.kind === 'positional') throw new ConfigError(`unexpected argument ${JSON.stringify(token.value)} (settings are flags, e.g. --pool-size=2)`);
    if (token.kind !== 'option') continue;
    if (token.name === 'help' || token.name === 'version') {
      result[token.name] = true;
      continue;
    }
    const spec = FLAGS.get(token.name);
    if (spec === undefined) {
      const suggestion = closestName(token.name, FLAGS.keys());
      throw new ConfigError(`unknown flag ${token.rawName}${suggestion === undefined ? '' : ` (did you mean --${suggestion}?)`}; see --help`);
    }
    if (!spec.switch && token.value === undefined) throw new ConfigError(`${token.rawName} needs a value`);
    result.flags[spec.variable] = token.value ?? 'true';
  }
  return result;
}

/** `--echo-config` and `--list-backend-providers`, from the flags or the environment. Throws a `ConfigError` naming a bad value. */
export function readCommands(input: SettingInput): Record<keyof typeof COMMANDS, boolean> {
  const isSet = (variable: string): boolean => {
    const given = settingText(input, variable);
    try {
      return given !== undefined && parseFlag(given.text);
    } catch (err) {
      throw new ConfigError(`invalid configuration: ${given?.source ?? variable}: ${errorMessage(err)}`);
    }
  };
  return { echoConfig: isSet(COMMANDS.echoConfig.env), listBackendProviders: isSet(COMMANDS.listBackendProviders.env) };
}

/** `--help`: every flag with what it is for. */
export function usage(): string {
  const lines = [...FLAGS].map(([name, spec]) => `  --${name}${spec.switch ? '' : '=VALUE'}\n      ${spec.doc}`);
  return `Usage: mayfly [--FLAG[=VALUE] ...]

Runs CI jobs from a queue, each on a fresh instance of a backend.
Each setting is a flag, or the variable TRAVIS_WORKER_<FLAG> or <FLAG> (upper
case, _ for -), in that order; see config.example.env and docs/configuration.md.
Backend settings are variables only: see --list-backend-providers.
Signals, the control API, metrics and the logs: docs/operations.md.

  --help, -h
      Print this and exit
  --version, -v
      Print the version and exit
${lines.join('\n')}
`;
}
