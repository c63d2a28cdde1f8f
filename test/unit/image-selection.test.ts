/**
 * travis-ci/worker's env image selector tables (image/env_selector_test.go),
 * retyped, replayed against each backend's own image lookup: every row must
 * select the same image in gce, ec2 and docker (`env` selector) as in travis.
 */
import { describe, expect, it } from 'vitest';
import { envImageName } from '../../backends/docker/images.js';
import { imageSetting } from '../../backends/ec2/images.js';
import { definition as ec2 } from '../../backends/ec2/index.js';
import { imagePattern } from '../../backends/gce/images.js';
import { definition as gce } from '../../backends/gce/index.js';
import type { StartAttributes } from '../../src/backend/kit.js';
import { loadConfig } from '../../src/config/load.js';
import { configErrorOf } from '../helpers/config-error.js';

interface Row {
  expected: string;
  params: Partial<Pick<StartAttributes, 'language' | 'dist' | 'group' | 'os'>>;
}

interface Table {
  /** The `IMAGE_*` variables, without the backend prefix. */
  env: Record<string, string>;
  rows: Row[];
}

const TABLES: Table[] = [
  {
    env: {
      IMAGE_DEFAULT: 'travis:default',
      IMAGE_LINUX: 'travis:linux',
      IMAGE_DIST_XENIAL: 'travis:xenial',
      IMAGE_DIST_XENIAL_PYTHON: 'travis:py3k',
      IMAGE_GROUP_EDGE: 'travis:edge',
      IMAGE_GROUP_EDGE_RUBY: 'travis:ruby9001',
      IMAGE_LANGUAGE_RUBY: 'travis:ruby8999',
      IMAGE_PYTHON: 'travis:python',
    },
    rows: [
      { expected: 'travis:default', params: { language: 'clojure' } },
      { expected: 'travis:default', params: { language: 'java' } },
      { expected: 'travis:edge', params: { language: 'java', group: 'edge' } },
      { expected: 'travis:linux', params: { language: 'bf', group: 'wat', os: 'linux' } },
      { expected: 'travis:py3k', params: { language: 'python', dist: 'xenial' } },
      { expected: 'travis:ruby8999', params: { language: 'ruby' } },
      { expected: 'travis:ruby9001', params: { language: 'ruby', group: 'edge' } },
      { expected: 'travis:xenial', params: { language: 'java', dist: 'xenial' } },
    ],
  },
  {
    env: {
      IMAGE_DEFAULT: 'travisci/ci-garnet:packer-1410230255-fafafaf',
      IMAGE_DIST_BIONIC: 'registry.business.com/fancy/ubuntu:bionic',
      IMAGE_DIST_TRUSTY: 'travisci/ci-connie:packer-1420290255-fafafaf',
      IMAGE_DIST_TRUSTY_RUBY: 'registry.business.com/travisci/ci-ruby:whatever',
      IMAGE_GROUP_EDGE_PYTHON: 'travisci/ci-garnet:packer-1530230255-fafafaf',
      IMAGE_LANGUAGE_RUBY: 'registry.business.com/travisci/ci-ruby:whatever',
    },
    rows: [
      { expected: 'registry.business.com/fancy/ubuntu:bionic', params: { language: 'bash', dist: 'bionic' } },
      { expected: 'registry.business.com/fancy/ubuntu:bionic', params: { language: 'ruby', dist: 'bionic' } },
      { expected: 'registry.business.com/travisci/ci-ruby:whatever', params: { language: 'ruby', dist: 'trusty' } },
      { expected: 'registry.business.com/travisci/ci-ruby:whatever', params: { language: 'ruby' } },
      { expected: 'travisci/ci-connie:packer-1420290255-fafafaf', params: { language: 'wat', dist: 'trusty' } },
      { expected: 'travisci/ci-garnet:packer-1410230255-fafafaf', params: { language: 'python', group: 'stable' } },
      { expected: 'travisci/ci-garnet:packer-1410230255-fafafaf', params: { language: 'python' } },
      { expected: 'travisci/ci-garnet:packer-1410230255-fafafaf', params: { language: 'wat' } },
      { expected: 'travisci/ci-garnet:packer-1530230255-fafafaf', params: { language: 'python', group: 'edge' } },
    ],
  },
];

/** What the config loader hands a backend: the `IMAGE_<NAME>` family keyed by lower-case name, minus declared settings. */
function family(env: Record<string, string>, declared: readonly string[]): Record<string, string> {
  const images: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    const name = key.slice('IMAGE_'.length);
    if (!declared.includes(name)) images[name.toLowerCase()] = value;
  }
  return images;
}

function attributesOf(params: Row['params']): StartAttributes {
  return {
    jobId: 1,
    repository: 'travis-ci/worker',
    language: params.language ?? '',
    dist: params.dist ?? '',
    arch: 'amd64',
    group: params.group ?? '',
    os: params.os ?? '',
    vmType: 'default',
    vmConfig: {},
    hardTimeoutMs: 3_600_000,
    warmer: false,
  };
}

/** Each backend's lookup, from the same `IMAGE_*` variables. */
const LOOKUPS: Record<string, (env: Record<string, string>, attributes: StartAttributes) => string> = {
  gce: (env, attributes) => imagePattern(attributes, family(env, ['DEFAULT', 'ALIASES']), env['IMAGE_DEFAULT'] ?? ''),
  ec2: (env, attributes) => imageSetting(attributes, family(env, ['DEFAULT']), env['IMAGE_DEFAULT'] ?? ''),
  docker: (env, attributes) => envImageName(attributes, family(env, [])),
};

describe("travis' env image selector tables", () => {
  for (const [backend, lookup] of Object.entries(LOOKUPS)) {
    it(`${backend} selects the image travis selects for every row`, () => {
      for (const table of TABLES) {
        for (const row of table.rows) {
          expect({ params: row.params, image: lookup(table.env, attributesOf(row.params)) }).toEqual({
            params: row.params,
            image: row.expected,
          });
        }
      }
    });
  }
});

describe('an IMAGE_<KEY> naming default', () => {
  // travis' selector follows the value once through its lookup, where IMAGE_DEFAULT sits under `default`.
  for (const [backend, lookup] of Object.entries(LOOKUPS)) {
    it(`${backend} selects IMAGE_DEFAULT for it, as travis does`, () => {
      const env = { IMAGE_DEFAULT: 'travis:default', IMAGE_RUBY: 'default' };
      expect(lookup(env, attributesOf({ language: 'ruby' }))).toBe('travis:default');
    });
  }
});

describe("travis' IMAGE_SELECTOR_TYPE", () => {
  it.each([
    ['gce', gce],
    ['ec2', ec2],
  ])('%s refuses the api selector it does not have, naming the variable, and accepts env', (name, definition) => {
    const prefix = `TRAVIS_WORKER_${name.toUpperCase()}`;
    const loading = configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: name, [`${prefix}_IMAGE_SELECTOR_TYPE`]: 'api', [`${prefix}_IMAGE_SELECTOR_URL`]: 'http://127.0.0.1:1/images' }, [definition]);
    expect(loading).toMatch(new RegExp(`${prefix}_IMAGE_SELECTOR_TYPE: "api" is not supported: mayfly selects images from IMAGE_<KEY> settings`));
    expect(() => loadConfig([definition], { TRAVIS_WORKER_PROVIDER_NAME: name, [`${prefix}_IMAGE_SELECTOR_TYPE`]: 'env' })).not.toThrow();
  });
});
