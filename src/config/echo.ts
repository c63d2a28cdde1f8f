/** `--echo-config` and `--list-backend-providers`: settings written back as an operator would write them. */
import type convict from 'convict';
import type { SettingFamily } from '../backend/contract.js';
import { MASK } from '../redact.js';
import { backendEnvName, exportLine, familyEnvPrefix, formatSettingValue, isRequired, schemaLeaves } from './env.js';
import { settingFormat } from './formats.js';
import { byCodeUnits } from './read.js';
import { CORE_LEAVES } from './schema.js';
import type { AnyBackendDefinition, WorkerConfig } from './types.js';

/**
 * A setting's line: `export NAME="value"` (secrets masked), or a comment
 * describing a value that is not shown at all. A value loading left out
 * (an unset setting, an optional group that is off) is echoed as its
 * default.
 */
function echoLine(variable: string, node: convict.SchemaObj, value: unknown): string {
  const shown = value === undefined ? node.default : value;
  const describe = settingFormat(node)?.describe;
  if (describe !== undefined && shown !== null && shown !== undefined) return `# ${variable}: ${describe(shown)}`;
  return exportLine(variable, formatSettingValue(node, shown));
}

/** Lines for settings, sorted by variable. */
function echoLeaves(leaves: readonly { variable: string; node: convict.SchemaObj; value: unknown }[]): string[] {
  return [...leaves].sort((a, b) => byCodeUnits(a.variable, b.variable)).map(({ variable, node, value }) => echoLine(variable, node, value));
}

/**
 * The effective configuration as `export TRAVIS_WORKER_X="value"` lines, as
 * travis' `--echo-config` prints it: core settings sorted by name, then the
 * selected backend's. Secrets are masked, durations written the Go way.
 * (The `*_TLS_CERT_PATH` files were read into the `*_TLS_CERT` values.)
 */
export function echoConfig(config: WorkerConfig, backends: readonly AnyBackendDefinition[]): string {
  const core = echoLeaves(CORE_LEAVES.map(({ node, parts }) => ({ variable: node.env, node, value: valueAt(config, parts) })));

  const backend = backends.find((candidate) => candidate.name === config.providerName);
  const provider =
    backend === undefined
      ? [`# (no backend named ${config.providerName} is known)`]
      : echoLeaves(
          schemaLeaves(backend.settings).map((leaf) => ({
            variable: backendEnvName(backend.name, leaf.parts),
            node: leaf.node,
            value: valueAt(config.backendSettings, leaf.parts),
          })),
        ).concat(echoFamilies(backend, config.backendSettings));

  const lines = ['# mayfly effective configuration (secrets masked)', ...core, '', `# provider settings (${config.providerName})`, ...provider];
  const unused = config.warnings.flatMap((warning) => warning.variables).sort(byCodeUnits);
  if (unused.length > 0) lines.push('', `# set but not used by mayfly: ${unused.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

function echoFamilies(backend: AnyBackendDefinition, settings: Record<string, unknown>): string[] {
  return (Object.entries(backend.settingFamilies ?? {}) as [string, SettingFamily][]).flatMap(([family, { prefix, sensitive }]) =>
    Object.entries((settings[family] ?? {}) as Record<string, string>)
      .map(([name, value]) => exportLine(`${familyEnvPrefix(backend.name, prefix)}${name.toUpperCase()}`, sensitive && value !== '' ? MASK : value))
      .sort(byCodeUnits),
  );
}

function valueAt(settings: object, parts: readonly string[]): unknown {
  let value: unknown = settings;
  for (const part of parts) {
    value = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[part] : undefined;
  }
  return value;
}

/** A setting's default as an operator would write it; secrets masked, `(required)` when there is none. */
function describeDefault(node: convict.SchemaObj): string {
  if (isRequired(node)) return '(required)';
  // Defaults may be written the way the env would (`'5m'`) or already converted (ms).
  const shown = typeof node.default === 'string' ? (node.sensitive === true && node.default !== '' ? MASK : node.default) : formatSettingValue(node, node.default);
  return `(default ${JSON.stringify(shown)})`;
}

/**
 * Every backend with its description and settings (variable name, default,
 * doc), for `--list-backend-providers`.
 */
export function listBackendProviders(backends: readonly AnyBackendDefinition[]): string {
  const sections = [...backends]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((backend) => {
      const leaves = schemaLeaves(backend.settings);
      const families = (Object.values(backend.settingFamilies ?? {}) as SettingFamily[]).flatMap(({ prefix, doc }) => [
        `  ${familyEnvPrefix(backend.name, prefix)}<NAME>`,
        `      ${doc}`,
      ]);
      const settings = leaves.length === 0 && families.length === 0
        ? ['  (no settings)']
        : leaves.flatMap((leaf) => {
            const doc = typeof leaf.node.doc === 'string' && leaf.node.doc !== '' ? [`      ${leaf.node.doc}`] : [];
            return [`  ${backendEnvName(backend.name, leaf.parts)} ${describeDefault(leaf.node)}`, ...doc];
          }).concat(families);
      return [`${backend.name}: ${backend.description}`, ...settings].join('\n');
    });
  return `${sections.join('\n\n')}\n`;
}
