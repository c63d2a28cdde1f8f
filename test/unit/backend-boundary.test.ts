/**
 * The plugin boundary is a lint rule (eslint.config.js): a backend imports
 * from the engine only through src/backend/kit.ts, and the engine imports no
 * backend. Linting small fixtures through ESLint's own API keeps the rule
 * from disappearing or loosening without a failing test.
 */
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const eslint = new ESLint({ cwd: ROOT });

/** The rules that fire when `code` is linted as if it were the file at `path` (relative to the repository). */
async function violations(code: string, path: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${ROOT}${path}` });
  if (!result) throw new Error(`ESLint returned no result for ${path}`);
  return result.messages.map((message) => `${message.ruleId ?? 'fatal'}: ${message.message}`);
}

const BACKEND_FIXTURE = 'backends/boundary-fixture/index.ts';

describe('the backend boundary', () => {
  it('reports a backend importing the engine past the kit', async () => {
    const code = "import type { WorkerConfig } from '../../src/config/types.js';\nexport type Fixture = WorkerConfig;\n";
    const found = await violations(code, BACKEND_FIXTURE);
    expect(found).toEqual([expect.stringMatching(/^@typescript-eslint\/no-restricted-imports: .*src\/config\/types\.js.*kit/)]);
  });

  it('reports a deeper path into the engine too', async () => {
    const code = "import { abortableSleep } from '../../src/util/abort.js';\nexport const wait = abortableSleep;\n";
    expect(await violations(code, BACKEND_FIXTURE)).toEqual([expect.stringMatching(/^@typescript-eslint\/no-restricted-imports: /)]);
  });

  it('lets a backend import the kit', async () => {
    const code = "import { abortableSleep, type Instance } from '../../src/backend/kit.js';\nexport const wait = abortableSleep;\nexport type Fixture = Instance;\n";
    expect(await violations(code, BACKEND_FIXTURE)).toEqual([]);
  });

  it('reports the engine importing a backend', async () => {
    const code = "import { backends } from '../backends/index.js';\nexport const all = backends;\n";
    expect(await violations(code, 'src/boundary-fixture.ts')).toEqual([expect.stringMatching(/^@typescript-eslint\/no-restricted-imports: /)]);
  });
});
