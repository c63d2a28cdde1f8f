import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'var/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-console': 'error',
    },
  },
  {
    files: ['scripts/**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  { files: ['scripts/**', 'test/**', 'bench/**'], rules: { 'no-console': 'off' } },
  {
    // The plugin boundary: a backend uses the engine only through its kit.
    files: ['backends/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '(^|/)src/(?!backend/kit\\.js$)',
              message: 'A backend imports from the engine only through src/backend/kit.js (add what it needs there).',
            },
          ],
        },
      ],
    },
  },
  {
    // The engine knows backends only through the contract; bin/ wires them in.
    files: ['src/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        { patterns: [{ regex: '(^|/)backends/', message: 'The engine does not import backends: bin/mayfly.ts hands them to it.' }] },
      ],
    },
  },
);
