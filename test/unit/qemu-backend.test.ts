import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chooseAccel, missingHostTools, overlayArgs, QemuBackend } from '../../backends/qemu/backend.js';
import { qemuCommand, vmFiles, type VmCommand } from '../../backends/qemu/command.js';
import { selectImage } from '../../backends/qemu/images.js';
import { listVms, writeLease } from '../../backends/qemu/lease.js';
import { seedFiles, writeSeed, type SeedOptions } from '../../backends/qemu/seed.js';
import { InstanceStartError, PayloadError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { captureLog } from '../helpers/log-capture.js';
import { testQemuSettings } from '../helpers/qemu.js';

const run = promisify(execFile);
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mayfly-qemu-unit-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const vm = (overrides: Partial<VmCommand> = {}): VmCommand => ({
  name: 'mayfly-job-7-0123abcd',
  files: vmFiles('/var/lib/mayfly/qemu/mayfly-job-7-0123abcd'),
  accel: 'tcg',
  cpus: 2,
  cpuset: '2,3',
  memory: '4G',
  network: { mode: 'user', sshPort: 40022 },
  kernel: undefined,
  ...overrides,
});

/** The value following `flag` each time it appears. */
const valuesOf = (args: string[], flag: string): string[] => args.flatMap((arg, i) => (arg === flag ? [args[i + 1] as string] : []));

describe('qemu command line', () => {
  it('user mode: pinned to its cores, SSH forwarded to loopback only, QMP on stdio, the job label on name and pidfile, no reboot', () => {
    const args = qemuCommand('qemu-system-x86_64', vm());
    expect(args.slice(0, 4)).toEqual(['taskset', '--cpu-list', '2,3', 'qemu-system-x86_64']);
    expect(valuesOf(args, '-netdev')).toEqual(['user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22']);
    expect(valuesOf(args, '-device')).toContain('virtio-net-pci,netdev=n0');
    expect(valuesOf(args, '-name')).toEqual(['mayfly-job-7-0123abcd,process=mayfly-job-7-0123abcd']);
    expect(valuesOf(args, '-pidfile')).toEqual(['/var/lib/mayfly/qemu/mayfly-job-7-0123abcd/qemu.pid']);
    expect(valuesOf(args, '-qmp')).toEqual(['stdio']);
    expect(valuesOf(args, '-accel')).toEqual(['tcg']);
    expect(valuesOf(args, '-smp')).toEqual(['2']);
    expect(valuesOf(args, '-m')).toEqual(['4G']);
    expect(args).toContain('-no-reboot');
    expect(valuesOf(args, '-action')).toEqual(['panic=exit-failure']);
    expect(valuesOf(args, '-drive')).toEqual([
      'file=/var/lib/mayfly/qemu/mayfly-job-7-0123abcd/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap',
      'file=/var/lib/mayfly/qemu/mayfly-job-7-0123abcd/seed.img,if=virtio,format=raw,readonly=on',
    ]);
    // The image boots its own kernel.
    expect(args).not.toContain('-kernel');
    expect(args).not.toContain('-cpu');
  });

  it('bridge mode: a tap on the bridge with the VM\'s MAC; KVM with the host CPU; direct-kernel boot', () => {
    const args = qemuCommand(
      '/opt/qemu/bin/qemu-system-x86_64',
      vm({
        accel: 'kvm',
        network: { mode: 'bridge', bridge: 'br0', mac: '52:54:00:12:34:56' },
        kernel: { kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', append: 'console=ttyS0 root=/dev/vda' },
      }),
    );
    expect(valuesOf(args, '-netdev')).toEqual(['bridge,id=n0,br=br0']);
    expect(valuesOf(args, '-device')).toContain('virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56');
    expect(args.join(' ')).not.toContain('hostfwd');
    expect(valuesOf(args, '-accel')).toEqual(['kvm']);
    expect(valuesOf(args, '-cpu')).toEqual(['host']);
    expect(valuesOf(args, '-kernel')).toEqual(['/boot/vmlinuz']);
    expect(valuesOf(args, '-initrd')).toEqual(['/boot/initrd.img']);
    expect(valuesOf(args, '-append')).toEqual(['console=ttyS0 root=/dev/vda']);
  });

  it('makes the overlay copy-on-write on the golden image, grown to the disk size when one is set', () => {
    expect(overlayArgs('/img/golden.qcow2', '/w/disk.qcow2', '')).toEqual(['create', '-q', '-f', 'qcow2', '-b', '/img/golden.qcow2', '-F', 'qcow2', '/w/disk.qcow2']);
    expect(overlayArgs('/img/golden.qcow2', '/w/disk.qcow2', '20G').at(-1)).toBe('20G');
  });

  it('names the host tools a VM is made with that PATH lacks, with their packages', () => {
    expect(missingHostTools(dir)).toEqual(['mkfs.vfat (dosfstools)', 'mcopy (mtools)', 'taskset (util-linux)']);
    expect(missingHostTools()).toEqual([]);
  });

  it('ACCEL=auto uses KVM when /dev/kvm opens, else TCG with a warning naming the cost; kvm and tcg are taken as set', () => {
    const log = captureLog();
    expect(chooseAccel('auto', true, log.logger)).toBe('kvm');
    expect(log.lines).toEqual([]);
    expect(chooseAccel('auto', false, log.logger)).toBe('tcg');
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]?.level).toBe('warn');
    expect(log.lines[0]?.msg).toMatch(/emulated \(TCG\): boots and builds run several times slower/);
    expect(chooseAccel('tcg', true, log.logger)).toBe('tcg');
    expect(chooseAccel('kvm', false, log.logger)).toBe('kvm');
  });
});

describe('qemu NoCloud seed', () => {
  const options: SeedOptions = {
    hostname: 'mayfly-job-7-0123abcd',
    publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJobKey mayfly\n',
    user: 'travis',
    implodeAfterMinutes: 40,
    network: undefined,
  };

  it('names the VM, gives the build user the job key, and schedules the auto-implode power-off', () => {
    const files = seedFiles(options);
    expect(Object.keys(files).sort()).toEqual(['meta-data', 'user-data']);
    expect(files['meta-data']).toBe('instance-id: mayfly-job-7-0123abcd\nlocal-hostname: mayfly-job-7-0123abcd\n');
    const userData = files['user-data'] ?? '';
    expect(userData.startsWith('#cloud-config\n')).toBe(true);
    expect(userData).toContain('  - name: travis\n');
    expect(userData).toContain('      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJobKey mayfly\n');
    expect(userData).toContain('power_state:\n  mode: poweroff\n  delay: "+40"\n');
    expect(seedFiles({ ...options, implodeAfterMinutes: undefined })['user-data']).not.toContain('power_state');
  });

  it('in bridge mode gives the guest its address on the NIC with its MAC', () => {
    const files = seedFiles({
      ...options,
      network: { mac: '52:54:00:12:34:56', address: '192.168.50.10/24', gateway: '192.168.50.1', nameservers: ['192.168.50.1', '9.9.9.9'] },
    });
    expect(files['network-config']).toBe(
      [
        'version: 2',
        'ethernets:',
        '  job:',
        '    match:',
        '      macaddress: "52:54:00:12:34:56"',
        '    addresses: [192.168.50.10/24]',
        '    routes:',
        '      - to: default',
        '        via: 192.168.50.1',
        '    nameservers:',
        '      addresses: [192.168.50.1, 9.9.9.9]',
        '',
      ].join('\n'),
    );
  });

  it('writes a volume labelled CIDATA holding the files, as cloud-init looks for it', async () => {
    const image = join(dir, 'seed.img');
    await writeSeed(dir, image, options, AbortSignal.timeout(20_000));
    const label = await run('mlabel', ['-s', '-i', image, '::']);
    expect(label.stdout).toMatch(/Volume label is CIDATA/);
    const userData = await run('mtype', ['-i', image, '::user-data']);
    expect(userData.stdout).toBe(seedFiles(options)['user-data']);
    const metaData = await run('mtype', ['-i', image, '::meta-data']);
    expect(metaData.stdout).toBe(seedFiles(options)['meta-data']);
  });
});

describe('qemu images', () => {
  const attributes = testAttributes({ language: 'ruby', dist: 'jammy', group: 'stable', os: 'linux' });

  it('takes the most specific image key, then IMAGE_DEFAULT; relative paths are under IMAGE_DIR', async () => {
    await writeFile(join(dir, 'ruby.qcow2'), '');
    await writeFile(join(dir, 'default.qcow2'), '');
    expect(await selectImage(attributes, { ruby: 'ruby.qcow2', default: 'default.qcow2' }, dir)).toEqual({ path: join(dir, 'ruby.qcow2'), name: 'ruby.qcow2' });
    expect(await selectImage(attributes, { python: 'ruby.qcow2', default: join(dir, 'default.qcow2') }, '/elsewhere')).toEqual({
      path: join(dir, 'default.qcow2'),
      name: 'default.qcow2',
    });
  });

  it("takes a job's image_name as a file in IMAGE_DIR, never a path out of it", async () => {
    await writeFile(join(dir, 'custom.qcow2'), '');
    expect(await selectImage({ ...attributes, imageName: 'custom.qcow2' }, {}, dir)).toEqual({ path: join(dir, 'custom.qcow2'), name: 'custom.qcow2' });
    const escape = await selectImage({ ...attributes, imageName: '../../etc/shadow' }, {}, dir).catch((err: unknown) => err);
    expect(escape).toBeInstanceOf(PayloadError);
    expect((escape as PayloadError).message).toBe('invalid job payload: config.image_name: "../../etc/shadow" is not the file name of an image');
  });

  it('fails the start (requeue) naming the image and the setting when the file is missing, or when no key has one', async () => {
    const missing = await selectImage(attributes, { default: 'gone.qcow2' }, dir).catch((err: unknown) => err);
    expect(missing).toBeInstanceOf(InstanceStartError);
    expect((missing as InstanceStartError).message).toBe(`image ${join(dir, 'gone.qcow2')} (from TRAVIS_WORKER_QEMU_IMAGE_DEFAULT) does not exist or cannot be read`);
    const none = await selectImage(attributes, {}, dir).catch((err: unknown) => err);
    expect((none as InstanceStartError).message).toMatch(/^no image for this job: set TRAVIS_WORKER_QEMU_IMAGE_DEFAULT/);
  });
});

describe('qemu machine shapes', () => {
  const signal = (): AbortSignal => AbortSignal.timeout(5_000);

  it('keys the image and its file: the same for jobs of one image, new once the file is replaced; a missing image fails as start does', async () => {
    await writeFile(join(dir, 'golden.qcow2'), 'first');
    const backend = new QemuBackend(testQemuSettings(dir, { imageDir: dir, images: { default: 'golden.qcow2' } }), testBackendContext(), false);
    const ruby = await backend.shape(testAttributes({ jobId: 1, language: 'ruby' }), signal());
    expect(ruby.image).toBe('golden.qcow2');
    expect(ruby.key).toMatch(/^image=golden\.qcow2 inode=\d+ mtime=\d+$/);
    expect(await backend.shape(testAttributes({ jobId: 2, language: 'python' }), signal())).toEqual(ruby);

    // How an operator swaps a golden image: a new file renamed over the old one.
    await writeFile(join(dir, 'golden.qcow2.new'), 'second');
    await rename(join(dir, 'golden.qcow2.new'), join(dir, 'golden.qcow2'));
    const replaced = await backend.shape(testAttributes({ jobId: 3 }), signal());
    expect(replaced.image).toBe('golden.qcow2');
    expect(replaced.key).not.toBe(ruby.key);

    const attributes = testAttributes({ jobId: 4, imageName: 'gone.qcow2' });
    const fromShape = await backend.shape(attributes, signal()).catch((err: unknown) => err);
    const fromStart = await backend
      .start(attributes, { signal: signal(), progress: () => {}, logger: silentLogger, recordPhase: () => {} })
      .catch((err: unknown) => err);
    expect(fromShape).toBeInstanceOf(InstanceStartError);
    expect(fromShape).toEqual(fromStart);
    expect((fromShape as InstanceStartError).message).toBe(`image ${join(dir, 'gone.qcow2')} (from config.image_name) does not exist or cannot be read`);
  });
});

describe('qemu VMs the reaper sees', () => {
  it('lists VM directories with a lease, ignores everything else, and removes only what it listed', async () => {
    const vmDir = join(dir, 'mayfly-job-12-00ff00ff');
    await mkdir(vmDir);
    await writeLease(join(vmDir, 'lease.json'), {
      worker: 'w1',
      jobId: 12,
      repository: 'octo/repo',
      leaseExpiresAt: '2026-12-04T12:00:00.000Z',
      createdAt: '2026-12-04T10:00:00.000Z',
    });
    await mkdir(join(dir, 'mayfly-job-13-00ff00ff')); // no lease (yet): not listed
    await mkdir(join(dir, 'someone-elses'));
    await writeFile(join(dir, 'someone-elses', 'lease.json'), '{"worker":"w1","jobId":1}');
    expect(await listVms(dir)).toEqual([
      { id: 'mayfly-job-12-00ff00ff', worker: 'w1', jobId: 12, leaseExpiresAt: new Date('2026-12-04T12:00:00.000Z'), createdAt: new Date('2026-12-04T10:00:00.000Z') },
    ]);
    expect(await listVms(join(dir, 'not-made-yet'))).toEqual([]);

    const backend = new QemuBackend(testQemuSettings(dir), testBackendContext(), false);
    await expect(backend.destroyManaged('someone-elses', AbortSignal.timeout(5_000))).rejects.toThrow(/was not listed as one of mayfly's/);
    expect((await backend.listManaged()).map((listed) => listed.id)).toEqual(['mayfly-job-12-00ff00ff']);
    await backend.destroyManaged('mayfly-job-12-00ff00ff', AbortSignal.timeout(5_000));
    expect(await listVms(dir)).toEqual([]);
  });
});
