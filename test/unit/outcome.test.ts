/**
 * How a job run ends: each stop reason, each error and each exit status
 * mapped to finish (with the state travis reports), requeue (with its
 * typed cause) or abandon.
 */
import { describe, expect, it } from 'vitest';
import {
  BrokerError,
  ConfigError,
  ConnectionLostError,
  InstanceStartError,
  NoCapacityError,
  PayloadError,
  ScriptRejectedError,
  ScriptUnavailableError,
  SshUnreachableError,
  StaleVmError,
  StartupTimeoutError,
  UploadError,
  UploadTimeoutError,
} from '../../src/errors.js';
import { endOf, endPastRequeueLimit, stateOfExit } from '../../src/job/outcome.js';

describe('the end of a stopped job', () => {
  it('finishes a cancelled or limited job in the state travis reports, with travis\' log texts exactly', () => {
    expect(endOf({ kind: 'cancelled', reason: 'by user' }, undefined)).toEqual({
      action: 'finish',
      state: 'cancelled',
      logLine: '\n\nDone: Job Cancelled\n\nby user',
    });
    // step_run_script.go's texts, byte for byte.
    expect(endOf({ kind: 'hard-timeout', limitMs: 50 * 60_000 }, undefined)).toEqual({
      action: 'finish',
      state: 'errored',
      logLine: '\n\nThe job exceeded the maximum time limit for jobs, and has been terminated.\n\n',
    });
    expect(endOf({ kind: 'log-silence', limitMs: 10 * 60_000 }, undefined)).toEqual({
      action: 'finish',
      state: 'errored',
      logLine:
        '\n\nNo output has been received in the last 10m0s, this potentially indicates a stalled build or something wrong with the build itself.\n' +
        'Check the details on how to adjust your build configuration on: https://docs.travis-ci.com/user/common-build-problems/#build-times-out-because-no-output-was-received\n\n' +
        'The build has been terminated\n\n',
    });
    expect(endOf({ kind: 'max-log-length', limitBytes: 4_500_000 }, undefined)).toEqual({
      action: 'finish',
      state: 'errored',
      logLine: '\n\nThe job exceeded the maximum log length, and has been terminated.\n\n',
    });
  });

  it('requeues on shutdown and on an undeliverable log, abandons a lost delivery', () => {
    expect(endOf({ kind: 'shutdown' }, undefined)).toEqual({ action: 'requeue', cause: 'shutdown' });
    expect(endOf({ kind: 'log-undeliverable' }, undefined)).toEqual({ action: 'requeue', cause: 'log-undeliverable' });
    expect(endOf({ kind: 'delivery-lost' }, undefined)).toEqual({ action: 'abandon', cause: 'delivery-lost' });
  });

  it('lets the stop win over the error it surfaced as', () => {
    expect(endOf({ kind: 'shutdown' }, new ScriptRejectedError('refused'))).toEqual({ action: 'requeue', cause: 'shutdown' });
    expect(endOf({ kind: 'cancelled', reason: 'r' }, new InstanceStartError('boot failed'))).toMatchObject({ action: 'finish', state: 'cancelled' });
  });
});

describe('the end of a job that failed', () => {
  it('requeues every infrastructure error with its code as the cause', () => {
    const errors = [
      new ScriptUnavailableError('x'),
      new InstanceStartError('x'),
      new NoCapacityError('x'),
      new StartupTimeoutError('x'),
      new SshUnreachableError('x'),
      new UploadError('x'),
      new UploadTimeoutError('x'),
      new StaleVmError('x'),
      new ConnectionLostError('x'),
      new BrokerError('x', 'closed'),
    ];
    expect(errors.map((err) => endOf(undefined, err))).toEqual(errors.map((err) => ({ action: 'requeue', cause: err.code })));
  });

  it('requeues an error mayfly did not raise on purpose as E_UNEXPECTED', () => {
    expect(endOf(undefined, new TypeError('a bug'))).toEqual({ action: 'requeue', cause: 'E_UNEXPECTED' });
    expect(endOf(undefined, 'a thrown string')).toEqual({ action: 'requeue', cause: 'E_UNEXPECTED' });
  });

  it("errors the job on an error that is the job's own, with the user's message when it has one", () => {
    expect(endOf(undefined, new ScriptRejectedError('HTTP 403 from the build API', { userMessage: 'The build script was refused.' }))).toEqual({
      action: 'finish',
      state: 'errored',
      logLine: '\nThe build script was refused.\n',
    });
    expect(endOf(undefined, new PayloadError('job.id', 'missing'))).toEqual({
      action: 'finish',
      state: 'errored',
      logLine: '\ninvalid job payload: job.id: missing\n',
    });
    expect(endOf(undefined, new ConfigError('bad'))).toMatchObject({ action: 'finish', state: 'errored' });
  });

  it('errors a job requeued past the limit, naming the limit and the last cause', () => {
    expect(endPastRequeueLimit('E_NO_CAPACITY', 3)).toEqual({
      action: 'finish',
      state: 'errored',
      logLine: '\n\nThe job was requeued 3 times in a row (the last time for E_NO_CAPACITY) and has been errored instead of being requeued again.\n\n',
    });
    expect(endPastRequeueLimit('shutdown', 1)).toMatchObject({ logLine: expect.stringContaining('requeued 1 time in a row (the last time for shutdown)') });
  });
});

describe('the end of a script that exited', () => {
  it('maps exit codes as travis does', () => {
    expect([0, 1, 2, 137, null].map(stateOfExit)).toEqual(['passed', 'failed', 'errored', 'errored', 'errored']);
  });
});
