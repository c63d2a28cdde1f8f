/**
 * The qemu backend against real VMs (TCG, the test guest booted straight
 * into its kernel). An instance is live while a VM directory or a QEMU
 * running its files is left in the test's work directory.
 */
import { rm } from 'node:fs/promises';
import { vi } from 'vitest';
import { definition as qemu } from '../../backends/qemu/index.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { describeWithQemu } from '../helpers/qemu-describe.js';
import { leftIn, testQemuSettings, testWorkDir, VM_TEST_TIMEOUT_MS } from '../helpers/qemu.js';
import { describeBackendConformance } from './backend-conformance.js';

vi.setConfig({ testTimeout: VM_TEST_TIMEOUT_MS, hookTimeout: VM_TEST_TIMEOUT_MS });

describeWithQemu('qemu backend (real VMs)', () => {
  describeBackendConformance('qemu', async () => {
    const workDir = await testWorkDir();
    return {
      backend: qemu.create(testQemuSettings(workDir), testBackendContext()),
      liveInstances: async () => {
        const left = await leftIn(workDir);
        return left.entries.length + left.processes.length;
      },
      close: () => rm(workDir, { recursive: true, force: true }),
    };
  }, { warmPool: true });
});
