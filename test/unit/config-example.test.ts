/**
 * config.example.env is what an operator copies to /etc/default/mayfly:
 * these tests keep it complete (every core setting), honest (each line's
 * value is the default, each comment the setting's doc) and loadable.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { BackendDefinition } from '../../src/backend/contract.js';
import { loadConfig } from '../../src/config/load.js';
import { CORE_VARIABLES } from '../../src/config/schema.js';

const EXAMPLE = fileURLToPath(new URL('../../config.example.env', import.meta.url));
const CONFIGURATION_PAGE = fileURLToPath(new URL('../../docs/configuration.md', import.meta.url));

/** The embedded default backend, reduced to a name: the example configures no backend. */
const local: BackendDefinition = {
  name: 'local',
  description: 'stand-in for the local backend',
  settings: {},
  create() {
    throw new Error('not used in config tests');
  },
};

interface ExampleLine {
  variable: string;
  value: string;
  /** The comment line right above it, without `# `. */
  doc: string | undefined;
}

function readExample(): { settings: ExampleLine[]; assignments: string[] } {
  const lines = readFileSync(EXAMPLE, 'utf8').split('\n');
  const settings: ExampleLine[] = [];
  const assignments: string[] = [];
  lines.forEach((line, index) => {
    const commented = /^#\s*(TRAVIS_WORKER_[A-Z0-9_]*)=(.*)$/.exec(line);
    if (commented) {
      const above = lines[index - 1] ?? '';
      settings.push({
        variable: commented[1] as string,
        value: commented[2] as string,
        doc: above.startsWith('# ') ? above.slice(2) : undefined,
      });
    } else if (/^\s*[A-Za-z_][A-Za-z0-9_]*=/.test(line)) {
      assignments.push(line);
    }
  });
  return { settings, assignments };
}

const coreByEnv = new Map(CORE_VARIABLES.map((variable) => [variable.env, variable]));

describe('config.example.env', () => {
  const { settings, assignments } = readExample();

  it('sets nothing: every setting is commented out', () => {
    expect(assignments).toEqual([]);
  });

  it('shows every core setting exactly once', () => {
    const shown = settings.map((setting) => setting.variable);
    expect([...shown].sort()).toEqual([...coreByEnv.keys()].sort());
  });

  it('names no unknown variable', () => {
    expect(settings.filter((setting) => !coreByEnv.has(setting.variable)).map((setting) => setting.variable)).toEqual([]);
  });

  it("puts each setting's doc right above it", () => {
    const mismatched = settings
      .filter((setting) => setting.doc !== coreByEnv.get(setting.variable)?.doc)
      .map((setting) => `${setting.variable}: "${setting.doc}" vs "${coreByEnv.get(setting.variable)?.doc}"`);
    expect(mismatched).toEqual([]);
  });

  it('loads, uncommented, to exactly the defaults', () => {
    const env = Object.fromEntries(settings.map((setting) => [setting.variable, setting.value]));
    expect(loadConfig([local], env)).toEqual(loadConfig([local], {}));
  });
});

describe('docs/configuration.md', () => {
  /** Its reference rows: `` | `VARIABLE` | default | meaning | ``, the default as `value` or `empty`. */
  const rows = new Map(
    [...readFileSync(CONFIGURATION_PAGE, 'utf8').matchAll(/^\| `(TRAVIS_WORKER_[A-Z0-9_]+)` \| (`[^`]*`|empty) \|/gm)].map((match) => [
      match[1] as string,
      match[2] === 'empty' ? '' : (match[2] as string).slice(1, -1),
    ]),
  );

  it('lists every core setting with the default config.example.env shows', () => {
    const { settings } = readExample();
    expect(Object.fromEntries(rows)).toEqual(Object.fromEntries(settings.map((setting) => [setting.variable, setting.value])));
  });
});
