import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { definition as ssh } from '../../backends/ssh/index.js';
import { parseGoDuration } from '../../src/config/formats.js';
import { generateClientKey, startSshd } from '../helpers/sshd.js';
import { describeBackendConformance } from './backend-conformance.js';
import { testBackendContext } from '../helpers/backend-context.js';

describeBackendConformance('ssh', async () => {
  const key = generateClientKey();
  const hosts = await Promise.all([startSshd({ authorizedKeys: [key.publicKey] }), startSshd({ authorizedKeys: [key.publicKey] })]);
  const backend = ssh.create(
    {
      hosts: hosts.map((host) => `${host.host}:${host.port}`),
      user: hosts[0]?.username ?? 'root',
      key: key.privateKey,
      keyPath: '',
      password: '',
      resetCommand: '',
      maxFailures: 3,
      quarantine: parseGoDuration('10m'),
      dialTimeout: parseGoDuration('5s'),
      uploadRetries: 3,
      uploadRetrySleep: parseGoDuration('100ms'),
    },
    testBackendContext(),
  );
  return {
    backend,
    // A persistent host is "left holding an instance" when a job's script is still on it.
    liveInstances: async () => hosts.filter((host) => existsSync(join(host.home, 'build.sh'))).length,
    close: async () => {
      await Promise.all(hosts.map((host) => host.stop()));
    },
  };
});
