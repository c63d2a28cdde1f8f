/**
 * An existing travis-ci/worker env file and command line keep working:
 * settings read under both of travis' names and as flags, booleans and
 * provider values read as travis reads them, and every setting travis
 * reads known to mayfly, so that none stops startup.
 */
import { describe, expect, it } from 'vitest';
import { backends as realBackends } from '../../backends/index.js';
import type { Backend, BackendDefinition } from '../../src/backend/contract.js';
import { parseCommandLine, readCommands, usage } from '../../src/config/cli.js';
import { echoConfig } from '../../src/config/echo.js';
import { flagName } from '../../src/config/sources.js';
import { backendEnvName, schemaLeaves } from '../../src/config/env.js';
import { FOREIGN_PROVIDERS, IGNORED_PROVIDER_SETTINGS } from '../../src/config/ignored.js';
import { knownVariables, loadConfig } from '../../src/config/load.js';
import { CORE_VARIABLES } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { configErrorOf } from '../helpers/config-error.js';
import { TRAVIS_CORE_SETTINGS, TRAVIS_PROVIDER_SETTINGS } from '../helpers/travis-settings.js';

function notStarted(): Backend {
  throw new Error('not used in config tests');
}

interface TinySettings {
  projectId: string;
  zone: string;
  accountJson: string;
  preemptible: boolean;
  key: string;
  images: Record<string, string>;
}

/** A backend of these tests only: a required setting, a switch, a JSON secret, a literal key and a family. */
const tiny: BackendDefinition<TinySettings, 'images'> = {
  name: 'tiny',
  description: 'exists only in these tests',
  settings: {
    projectId: { doc: 'project', format: String, default: null },
    zone: { doc: 'zone', format: String, default: 'us-central1-b' },
    accountJson: { doc: 'credentials', format: String, default: '', sensitive: true },
    preemptible: { doc: 'preemptible machines', format: Boolean, default: false },
    key: { doc: 'a key as text', format: String, default: '', sensitive: true, literal: true },
  },
  settingFamilies: { images: { prefix: 'IMAGE', doc: 'image for jobs of language <NAME>' } },
  create: notStarted,
};
const local: BackendDefinition = { name: 'local', description: 'stand-in', settings: {}, create: notStarted };
const BACKENDS = [local, tiny];
const TINY = { TRAVIS_WORKER_PROVIDER_NAME: 'tiny', TRAVIS_WORKER_TINY_PROJECT_ID: 'ci' };

describe('both of travis names', () => {
  it('reads each core setting as TRAVIS_WORKER_<NAME> or <NAME>, the prefixed one winning', () => {
    const config = loadConfig(BACKENDS, {
      QUEUE_TYPE: 'amqp',
      AMQP_URI: 'amqp://rabbit.example.com',
      QUEUE_NAME: 'builds.gce',
      POOL_SIZE: '3',
      TRAVIS_WORKER_POOL_SIZE: '5',
      HARD_TIMEOUT: '20m',
    });
    expect(config.queueType).toBe('amqp');
    expect(config.amqp.uri).toBe('amqp://rabbit.example.com');
    expect(config.queueName).toBe('builds.gce');
    expect(config.poolSize).toBe(5);
    expect(config.timeouts.hardMs).toBe(20 * 60_000);
  });

  it('takes a set but empty TRAVIS_WORKER_<NAME> over <NAME>, as travis does', () => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_INFRA: '', INFRA: 'gce' }).infra).toBe('');
  });

  it('names a bad plain value by the name it was given under', () => {
    expect(configErrorOf({ POOL_SIZE: 'lots' }, BACKENDS)).toMatch(/^invalid configuration: POOL_SIZE: must be a number/);
  });

  it('reads the provider name and its settings as <PROVIDER>_<KEY> too, the prefixed one winning', () => {
    const config = loadConfig(BACKENDS, {
      PROVIDER_NAME: 'tiny',
      TINY_PROJECT_ID: 'plain-project',
      TINY_ZONE: 'plain-zone',
      TRAVIS_WORKER_TINY_ZONE: 'prefixed-zone',
      TINY_IMAGE_RUBY: 'plain-ruby',
      TINY_IMAGE_GO: 'plain-go',
      TRAVIS_WORKER_TINY_IMAGE_GO: 'prefixed-go',
    });
    expect(config.providerName).toBe('tiny');
    expect(config.backendSettings).toMatchObject({
      projectId: 'plain-project',
      zone: 'prefixed-zone',
      images: { ruby: 'plain-ruby', go: 'prefixed-go' },
    });
  });
});

describe('flags', () => {
  it('sets each setting from its flag, over the environment', () => {
    const { flags } = parseCommandLine(['--amqp-uri', 'amqp://flag.example.com', '--pool-size=4', '--provider-name', 'tiny', '--debug']);
    const config = loadConfig(BACKENDS, { ...TINY, TRAVIS_WORKER_PROVIDER_NAME: 'local', TRAVIS_WORKER_POOL_SIZE: '2' }, flags);
    expect(config.amqp.uri).toBe('amqp://flag.example.com');
    expect(config.poolSize).toBe(4);
    expect(config.providerName).toBe('tiny');
    expect(config.logLevel).toBe('debug');
  });

  it.each([
    [['--debug'], 'debug'],
    [['--debug=false'], 'info'],
    [['--debug=t'], 'debug'],
    [['-debug'], 'debug'],
    [['--debug', '--debug=0'], 'info'],
  ])('reads the boolean flag %j as Go does', (args, level) => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_DEBUG: 'true' }, parseCommandLine(args).flags).logLevel).toBe(level);
  });

  it('names a bad flag value by its flag', () => {
    const { flags } = parseCommandLine(['--pool-size', 'lots']);
    expect(() => loadConfig(BACKENDS, {}, flags)).toThrow(/^invalid configuration: --pool-size: must be a number/);
  });

  it('refuses an unknown flag, naming the closest one, and a flag without its value', () => {
    expect(() => parseCommandLine(['--pool-sise', '3'])).toThrow(new ConfigError('unknown flag --pool-sise (did you mean --pool-size?); see --help'));
    expect(() => parseCommandLine(['--amqp-uri'])).toThrow(new ConfigError('--amqp-uri needs a value'));
    expect(() => parseCommandLine(['pool-size'])).toThrow(ConfigError);
  });

  it('accepts the flags of travis settings mayfly does not use, with their warning', () => {
    const config = loadConfig(BACKENDS, {}, parseCommandLine(['--log-metrics', '--librato-email', 'ops@example.com']).flags);
    expect(config.warnings.map((warning) => warning.variables)).toEqual([['--librato-email'], ['--log-metrics']]);
  });

  it('has a flag for every setting travis has one for, listed by --help', () => {
    const text = usage();
    const missing = TRAVIS_CORE_SETTINGS.filter((name) => !text.includes(`  --${flagName(name)}\n`) && !text.includes(`  --${flagName(name)}=VALUE\n`));
    expect(missing).toEqual([]);
    for (const { env } of CORE_VARIABLES) expect(text).toContain(`--${flagName(env)}`);
  });
});

describe('settings set that have no effect', () => {
  it('warns about an unknown variable, naming the closest known setting, instead of refusing to start', () => {
    const config = loadConfig(BACKENDS, { TRAVIS_WORKER_POOLSIZE: '3' });
    expect(config.warnings).toEqual([
      {
        variables: ['TRAVIS_WORKER_POOLSIZE'],
        message: 'TRAVIS_WORKER_POOLSIZE is not a setting mayfly knows, so it has no effect (did you mean TRAVIS_WORKER_POOL_SIZE?)',
      },
    ]);
  });

  it('stops on an unknown variable with STRICT_CONFIG, even when other settings are bad too', () => {
    const message = configErrorOf({ TRAVIS_WORKER_STRICT_CONFIG: 'true', TRAVIS_WORKER_POOLSIZE: '3', TRAVIS_WORKER_HARD_TIMEOUT: '5' }, BACKENDS);
    expect(message).toContain('TRAVIS_WORKER_POOLSIZE: unknown setting (did you mean TRAVIS_WORKER_POOL_SIZE?)');
    expect(message).toContain('TRAVIS_WORKER_HARD_TIMEOUT: ');
  });

  it('warns once about a travis setting mayfly does not use, under either name, saying why', () => {
    const config = loadConfig(BACKENDS, { TRAVIS_WORKER_SENTRY_DSN: 'https://key@sentry.example.com/1', LOG_POOL_SIZE: '3' });
    expect(config.warnings).toEqual([
      { variables: ['TRAVIS_WORKER_SENTRY_DSN'], message: 'TRAVIS_WORKER_SENTRY_DSN has no effect in mayfly: mayfly has no Sentry client: errors are in its JSON log' },
      {
        variables: ['LOG_POOL_SIZE'],
        message: 'LOG_POOL_SIZE has no effect in mayfly: mayfly has no separate pools of log and state-update senders: each job sends its own',
      },
    ]);
    expect(JSON.stringify(config.warnings)).not.toContain('sentry.example.com');
  });

  it('accepts the settings of a travis provider mayfly does not have, with one warning per provider', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_STRICT_CONFIG: 'true',
      TRAVIS_WORKER_LXD_IMAGE: 'ubuntu',
      TRAVIS_WORKER_LXD_CPUS: '2',
      TRAVIS_WORKER_JUPITERBRAIN_ENDPOINT: 'https://u:p@jb.example.com',
    });
    expect(config.warnings.map((warning) => warning.variables)).toEqual([
      ['TRAVIS_WORKER_LXD_CPUS', 'TRAVIS_WORKER_LXD_IMAGE'],
      ['TRAVIS_WORKER_JUPITERBRAIN_ENDPOINT'],
    ]);
    expect(config.warnings[0]?.message).toBe(
      "mayfly has no lxd backend, so these settings of travis' lxd provider have no effect: TRAVIS_WORKER_LXD_CPUS, TRAVIS_WORKER_LXD_IMAGE",
    );
  });

  it("accepts the selected backend's travis settings it does not use, with a warning saying why", () => {
    const config = loadConfig(realBackends, { TRAVIS_WORKER_STRICT_CONFIG: 'true', TRAVIS_WORKER_PROVIDER_NAME: 'ec2', TRAVIS_WORKER_EC2_TAGS: 'a=b' });
    expect(config.warnings).toEqual([
      {
        variables: ['TRAVIS_WORKER_EC2_TAGS'],
        message: 'TRAVIS_WORKER_EC2_TAGS has no effect in mayfly: travis-ci/worker lists it in its help but never reads it (CUSTOM_TAGS is the one it reads)',
      },
    ]);
    expect(echoConfig(config, realBackends)).toContain('# set but not used by mayfly: TRAVIS_WORKER_EC2_TAGS\n');
  });

  it('knows every setting travis-ci/worker reads: implemented, or accepted with a reason', () => {
    const known = knownVariables(realBackends);
    const mayflyBackends = new Set(realBackends.map((backend) => backend.name));
    const unknown = TRAVIS_CORE_SETTINGS.map((name) => `TRAVIS_WORKER_${name}`).filter((variable) => {
      const owner = known.owner(variable);
      return owner === undefined || owner.kind === 'foreign';
    });
    for (const [provider, keys] of Object.entries(TRAVIS_PROVIDER_SETTINGS)) {
      const expected = mayflyBackends.has(provider) ? ['backend', 'ignored'] : ['foreign'];
      for (const key of keys) {
        const variable = backendEnvName(provider, [key]);
        const owner = known.owner(variable);
        if (owner === undefined || !expected.includes(owner.kind)) unknown.push(variable);
      }
    }
    expect(unknown).toEqual([]);
    expect(Object.keys(TRAVIS_PROVIDER_SETTINGS).filter((provider) => !mayflyBackends.has(provider)).sort()).toEqual(
      FOREIGN_PROVIDERS.filter((provider) => provider !== 'cloudbrain').sort(),
    );
  });

  it('lists as unused only settings the backend does not implement (drop an entry once it does)', () => {
    const implemented = Object.entries(IGNORED_PROVIDER_SETTINGS).flatMap(([provider, settings]) => {
      const backend = realBackends.find((candidate) => candidate.name === provider);
      if (backend === undefined) return [`${provider}: no such backend`];
      const declared = new Set(schemaLeaves(backend.settings).map((leaf) => backendEnvName(provider, leaf.parts)));
      return settings.map((setting) => backendEnvName(provider, [setting.name])).filter((variable) => declared.has(variable));
    });
    expect(implemented).toEqual([]);
  });
});

describe('booleans', () => {
  it.each([
    ['1', true],
    ['t', true],
    ['T', true],
    ['TRUE', true],
    ['true', true],
    ['True', true],
    ['0', false],
    ['f', false],
    ['F', false],
    ['FALSE', false],
    ['false', false],
    ['False', false],
  ])('reads %j as Go strconv.ParseBool does (%s)', (text, value) => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_AMQP_INSECURE: text }).amqp.insecure).toBe(value);
    expect(loadConfig(BACKENDS, { ...TINY, TRAVIS_WORKER_TINY_PREEMPTIBLE: text }).backendSettings.preemptible).toBe(value);
  });

  it.each([
    ['off', false],
    ['No', false],
    ['', false],
    ['0', false],
    ['on', true],
    ['enabled', true],
    ['t', true],
  ])("reads %j as travis' asBool does (%s) for the EC2 switches that use it", (text, value) => {
    const config = loadConfig(realBackends, {
      TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
      TRAVIS_WORKER_EC2_PUBLIC_IP: text,
      TRAVIS_WORKER_EC2_EBS_OPTIMIZED: text,
    });
    expect(config.backendSettings).toMatchObject({ publicIp: value, ebsOptimized: value });
  });
});

describe('provider values', () => {
  it('are URL-unescaped as travis does: %XX and + decoded, invalid escaping kept, ACCOUNT_JSON never', () => {
    const config = loadConfig(BACKENDS, {
      ...TINY,
      TRAVIS_WORKER_TINY_PROJECT_ID: 'ci%2Dproject',
      TRAVIS_WORKER_TINY_ZONE: '100%+sure',
      TRAVIS_WORKER_TINY_ACCOUNT_JSON: '{"key":"a+b%2B"}',
      TRAVIS_WORKER_TINY_IMAGE_RUBY: 'travis-ci-ruby.%2B',
      TINY_IMAGE_GO: 'go+image',
    });
    expect(config.backendSettings).toMatchObject({
      projectId: 'ci-project',
      zone: '100%+sure',
      accountJson: '{"key":"a+b%2B"}',
      images: { ruby: 'travis-ci-ruby.+', go: 'go image' },
    });
  });

  it('leave a setting declared literal as written (a key travis has no counterpart of)', () => {
    const pem = '-----BEGIN KEY-----\nAb+c/d%2Be==\n-----END KEY-----';
    expect(loadConfig(BACKENDS, { ...TINY, TRAVIS_WORKER_TINY_KEY: pem }).backendSettings.key).toBe(pem);
  });

  it('leave core values as they are', () => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_INFRA: 'a%2Bb+c' }).infra).toBe('a%2Bb+c');
  });
});

describe('commands from the environment', () => {
  it.each([
    [{ TRAVIS_WORKER_ECHO_CONFIG: 'true' }, { echoConfig: true, listBackendProviders: false }],
    [{ LIST_BACKEND_PROVIDERS: '1' }, { echoConfig: false, listBackendProviders: true }],
    [{ TRAVIS_WORKER_ECHO_CONFIG: 'false', ECHO_CONFIG: 'true' }, { echoConfig: false, listBackendProviders: false }],
  ])('reads %j', (env, commands) => {
    expect(readCommands({ env, flags: {} })).toEqual(commands);
  });

  it('names a bad value', () => {
    expect(() => readCommands({ env: { TRAVIS_WORKER_ECHO_CONFIG: 'sure' }, flags: {} })).toThrow(/TRAVIS_WORKER_ECHO_CONFIG: must be true or false/);
  });
});
