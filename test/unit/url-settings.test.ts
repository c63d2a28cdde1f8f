/**
 * URL-valued settings, core and backend: one masking rule in
 * `--echo-config`, and config errors that never quote their value.
 */
import { describe, expect, it } from 'vitest';
import { backends } from '../../backends/index.js';
import { echoConfig } from '../../src/config/echo.js';
import { loadConfig } from '../../src/config/load.js';
import { CORE_SETTINGS } from '../../src/config/schema.js';
import { maskUrl } from '../../src/redact.js';
import { backendEnvName, isRequired, isUrlSetting, schemaLeaves } from '../../src/config/env.js';

/** Every setting, core and of every shipped backend, with its variable. */
const ALL_SETTINGS = [
  ...schemaLeaves(CORE_SETTINGS).map((leaf) => ({ backend: undefined, variable: leaf.node.env as string, node: leaf.node })),
  ...backends.flatMap((backend) =>
    schemaLeaves(backend.settings).map((leaf) => ({ backend: backend.name, variable: backendEnvName(backend.name, leaf.parts), node: leaf.node })),
  ),
];
const URL_SETTINGS = ALL_SETTINGS.filter(({ node }) => isUrlSetting(node));

/** Names that say "URL" but hold something else. */
const NOT_URLS = new Map([
  ['TRAVIS_WORKER_GCE_METADATA_HOST', 'host[:port], no scheme'],
  ['TRAVIS_WORKER_DOCKER_NO_PROXY', 'a list of host names'],
  ['TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN', 'a token (sensitive)'],
]);

/** A URL carrying a secret in every part that can hold one. */
function secretUrl(scheme: string): string {
  return `${scheme}://user-s3cr3t:pw-s3cr3t@host.example.com:1234/path?token=q-s3cr3t#f-s3cr3t`;
}

function schemeFor(variable: string): string {
  return variable.includes('AMQP') ? 'amqp' : 'https';
}

describe('URL-valued settings', () => {
  it('are all declared as URLs', () => {
    const named = ALL_SETTINGS.filter(({ variable }) => /_(URI|URL|ENDPOINT|HOST|PROXY|CACHE)$/.test(variable) && !NOT_URLS.has(variable));
    expect(named.length).toBeGreaterThan(10);
    expect(named.filter(({ node }) => !isUrlSetting(node)).map(({ variable }) => variable)).toEqual([]);
  });

  it('are echoed with user, password, query and fragment masked, every one of them', () => {
    // Masking is the point here, not whether a backend could use such URLs (an engine address has no path).
    const unchecked = backends.map(({ validate: _validate, ...backend }) => backend);
    for (const backend of unchecked) {
      const mine = URL_SETTINGS.filter((setting) => setting.backend === undefined || setting.backend === backend.name);
      const env = Object.fromEntries([
        ['TRAVIS_WORKER_PROVIDER_NAME', backend.name],
        ...schemaLeaves(backend.settings)
          .filter((leaf) => isRequired(leaf.node))
          .map((leaf) => [backendEnvName(backend.name, leaf.parts), 'required-value']),
        ...mine.map(({ variable }) => [variable, secretUrl(schemeFor(variable))]),
      ]);
      const text = echoConfig(loadConfig(unchecked, env), unchecked);
      expect(text).not.toContain('s3cr3t');
      for (const { variable } of mine) {
        expect(text).toContain(`export ${variable}="${schemeFor(variable)}://****:****@host.example.com:1234/path?****#****"\n`);
      }
    }
  });

  it('are masked whole when written without a scheme (user:password@proxy)', () => {
    const proxy = 'proxy-user:pw-s3cr3t@proxy.example.com:3128';
    const text = echoConfig(
      loadConfig(backends, { TRAVIS_WORKER_PROVIDER_NAME: 'docker', TRAVIS_WORKER_DOCKER_HTTP_PROXY: proxy, TRAVIS_WORKER_BUILD_APT_CACHE: proxy }),
      backends,
    );
    expect(text).toContain('export TRAVIS_WORKER_DOCKER_HTTP_PROXY="********"\n');
    expect(text).toContain('export TRAVIS_WORKER_BUILD_APT_CACHE="********"\n');
    expect(text).not.toContain('s3cr3t');
  });

  it('are never quoted in config errors, even without a scheme', () => {
    // The core URL settings that are checked as URLs (the build caches are passed on as text).
    const refusesText = (variable: string): boolean => {
      try {
        loadConfig(backends, { [variable]: 'not a URL' });
        return false;
      } catch {
        return true;
      }
    };
    const validated = URL_SETTINGS.filter(({ backend, variable }) => backend === undefined && refusesText(variable));
    expect(validated.map(({ variable }) => variable).sort()).toEqual([
      'TRAVIS_WORKER_AMQP_URI',
      'TRAVIS_WORKER_BUILD_API_URI',
      'TRAVIS_WORKER_HEARTBEAT_URL',
      'TRAVIS_WORKER_HOST_GCE_API_ENDPOINT',
      'TRAVIS_WORKER_LOGS_AMQP_URI',
    ]);
    for (const { variable } of validated) {
      const load = (): unknown => loadConfig(backends, { [variable]: 'guest:pw-s3cr3t@rabbit.example.com:5672' });
      expect(load).toThrow(new RegExp(`^invalid configuration: ${variable}: must be a URL starting with`));
      expect(load).not.toThrow(/s3cr3t/);
    }
  });
});

describe('maskUrl', () => {
  it.each([
    ['amqp://guest:guest@localhost:5672/', 'amqp://****:****@localhost:5672/'],
    ['amqp://', 'amqp://'],
    ['https://token@build.example.com/script', 'https://****@build.example.com/script'],
    ['https://build.example.com/script?token=abc', 'https://build.example.com/script?****'],
    ['unix:///var/run/docker.sock', 'unix:///var/run/docker.sock'],
    ['user:password@proxy:3128', '********'],
    ['not a url at all', '********'],
    ['', ''],
  ])('%s -> %s', (text, masked) => {
    expect(maskUrl(text)).toBe(masked);
  });
});
