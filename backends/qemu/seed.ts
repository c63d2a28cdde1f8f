/**
 * The cloud-init NoCloud seed a job's VM boots with: a small FAT volume
 * labelled `CIDATA` holding `meta-data` (instance id, host name),
 * `user-data` (the job's public key for the build user, the auto-implode
 * power-off) and, in bridge mode, `network-config` (the guest's address).
 * Stock cloud images read it on first boot; it is built without root,
 * with mkfs.vfat and mtools' mcopy. Only the public key is in it: the
 * private key stays in the worker's memory.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runTool } from './tools.js';

/** The seed volume's size in KiB: the three small files fit many times over (mkfs.vfat's floor for FAT12 is far below). */
const SEED_SIZE_KIB = 1024;
/** The label cloud-init's NoCloud source looks for (either case). */
export const SEED_LABEL = 'CIDATA';

/** The guest's address in bridge mode, set by cloud-init's network config on the NIC with this MAC. */
export interface StaticAddress {
  mac: string;
  /** `ip/prefix`. */
  address: string;
  gateway: string;
  nameservers: string[];
}

export interface SeedOptions {
  /** The VM's name: instance id and host name. */
  hostname: string;
  /** One `authorized_keys` line. */
  publicKey: string;
  user: string;
  /** Power off this many minutes after boot; undefined = never. */
  implodeAfterMinutes: number | undefined;
  network: StaticAddress | undefined;
}

/** The seed's files, by name. */
export function seedFiles(options: SeedOptions): Record<string, string> {
  const userData = [
    '#cloud-config',
    '# Written by mayfly: lets the worker log in with this job\'s SSH key (made for this job only).',
    'users:',
    `  - name: ${options.user}`,
    '    shell: /bin/bash',
    '    sudo: ALL=(ALL) NOPASSWD:ALL',
    '    ssh_authorized_keys:',
    `      - ${options.publicKey.trim()}`,
    'ssh_pwauth: false',
  ];
  if (options.implodeAfterMinutes !== undefined) {
    userData.push(
      'power_state:',
      '  mode: poweroff',
      `  delay: "+${options.implodeAfterMinutes}"`,
      '  message: "mayfly: the job hard limit has passed"',
      // Power off once the delay has passed, whatever cloud-init's other modules did.
      '  condition: true',
    );
  }
  const files: Record<string, string> = {
    'meta-data': `instance-id: ${options.hostname}\nlocal-hostname: ${options.hostname}\n`,
    'user-data': `${userData.join('\n')}\n`,
  };
  if (options.network !== undefined) files['network-config'] = networkConfig(options.network);
  return files;
}

/** cloud-init network config v2: the static address on the NIC with the VM's MAC. */
function networkConfig({ mac, address, gateway, nameservers }: StaticAddress): string {
  const lines = ['version: 2', 'ethernets:', '  job:', '    match:', `      macaddress: "${mac}"`, `    addresses: [${address}]`];
  if (gateway !== '') lines.push('    routes:', '      - to: default', `        via: ${gateway}`);
  if (nameservers.length > 0) lines.push('    nameservers:', `      addresses: [${nameservers.join(', ')}]`);
  return `${lines.join('\n')}\n`;
}

/** Write the seed volume to `image` (its files are made beside it, in `dir`, then copied in). */
export async function writeSeed(dir: string, image: string, options: SeedOptions, signal: AbortSignal): Promise<void> {
  const files = seedFiles(options);
  const paths: string[] = [];
  for (const [name, text] of Object.entries(files)) {
    const path = join(dir, name);
    await writeFile(path, text, { mode: 0o600 });
    paths.push(path);
  }
  await runTool('mkfs.vfat', ['-n', SEED_LABEL, '-C', image, String(SEED_SIZE_KIB)], signal);
  await runTool('mcopy', ['-i', image, ...paths, '::'], signal);
}
