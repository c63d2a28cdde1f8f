/**
 * The `ec2` backend: one fresh EC2 instance per job, reached over SSH with a
 * key made for that job alone, terminated on every path.
 *
 *   DescribeImages -> RunInstances (tags, user data, client token)
 *   -> DescribeInstances until running -> address -> SshMachine
 *
 * If start() fails or is aborted after RunInstances was sent, whatever it
 * launched is terminated before start() rejects, even when the RunInstances
 * answer never arrived (found again by its client token).
 *
 * Over the usual size for the same reason: the start and its clean-up
 * share one attempt's state; launch, polls, tags and termination are
 * modules of their own.
 */
import { randomUUID } from 'node:crypto';
import type { RunInstancesRequest } from '@aws-sdk/client-ec2';
import {
  CloudCallError,
  MalformedAnswerError,
  InstanceStartError,
  JobRefusedError,
  NoCapacityError,
  errorMessage,
  isMayflyError,
  SshMachine,
  generateJobKeyPair,
  abortableSleep,
  type Backend,
  type BackendContext,
  type Instance,
  type MachineShape,
  type ManagedInstance,
  type StartAttributes,
  type StartOptions,
  type CloudErrorKind,
  type Logger,
} from '../../src/backend/kit.js';
import { BootPolls } from './boot-polls.js';
import { Ec2Api, type Ec2InstanceDescription } from './api.js';
import { ec2ErrorCode, isUnsupportedAnywhere } from './classify.js';
import { imageSetting, resolveImage, type SelectedImage } from './images.js';
import { Ec2Instance } from './instance.js';
import { defaultInstanceType, launchRequest, mappedInstanceType } from './launch.js';
import { MANAGED_FILTERS, managedInstance } from './managed.js';
import { decodeUserData, parseCustomTags, type Ec2Settings, type Tag } from './settings.js';
import { jobTags, LEASE_MARGIN_MS } from './tags.js';
import { launchTimeOf, terminateInstance, terminateLostLaunch } from './terminate.js';
import { buildUserData } from './user-data.js';

/** travis' images run sshd on the standard port. */
const SSH_PORT = 22;
/** While an instance boots, a progress line at least this often (and on every state change). */
const PROGRESS_EVERY_MS = 10_000;
/**
 * First pause before asking whether a launched instance runs, in ms; the
 * pauses double up to BOOT_POLL_SLEEP. DescribeInstances is a
 * non-mutating call, whose bucket (100 calls, refilled 20 a second, EC2's
 * "Request throttling" page) a boot costs about a call a second of at most.
 */
const BOOT_POLL_FIRST_MS = 250;
/**
 * Terminating what a job made gets its own deadline, independent of the
 * job's (already aborted) signal: long enough for throttling retries and
 * the state checks, short enough that a broken API can't hold a worker.
 */
const CLEANUP_TIMEOUT_MS = 5 * 60_000;
/** State reasons of an instance that ended while pending for lack of capacity. */
const CAPACITY_STATE_REASONS = new Set(['Server.InsufficientInstanceCapacity', 'Server.SpotInstanceTermination']);

/** EC2's answer to a first spot launch by credentials that may not create the Spot service-linked role. */
const SPOT_ROLE_MISSING = 'AuthFailure.ServiceLinkedRoleCreationNotPermitted';

/** A failed call's kind, or undefined when it was no API failure (a bug, an abort). */
const kindOf = (err: unknown): CloudErrorKind | undefined => (err instanceof CloudCallError ? err.kind : undefined);

/**
 * The error start() throws for a failure: quota and capacity say which and
 * requeue; a configuration EC2 supports in no zone ends the job; anything
 * else requeues. `launch` is the RunInstances request, once there is one.
 */
function startError(err: unknown, launch?: RunInstancesRequest): Error {
  if (isMayflyError(err)) return err;
  const kind = kindOf(err);
  const code = err instanceof CloudCallError ? ec2ErrorCode(err.cause) : undefined;
  const detail = err instanceof CloudCallError ? errorMessage(err.cause) : errorMessage(err);
  if (err instanceof CloudCallError && isUnsupportedAnywhere(err.cause)) {
    const what = launch === undefined ? 'the instance' : `a ${launch.InstanceType} instance from ${launch.ImageId}`;
    return new JobRefusedError(`EC2 does not support launching ${what} (${code}): ${detail}`, {
      cause: err,
      userMessage: `EC2 refused to launch the build VM, ${what}: ${detail}\nIt would refuse it the same way again, so the job is not run again.`,
    });
  }
  if (kind === 'quota') {
    return new NoCapacityError(`EC2 quota exhausted (${code}): ${detail}`, {
      cause: err,
      userMessage: 'The EC2 account has reached its instance quota; the job will be run again.',
    });
  }
  if (code === SPOT_ROLE_MISSING) {
    return new InstanceStartError(
      `EC2 launches spot instances only once the account has the Spot service-linked role, and these credentials may not create it: run "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com" once, or allow iam:CreateServiceLinkedRole (${code}: ${detail})`,
      { cause: err },
    );
  }
  if (kind === 'capacity') {
    return new NoCapacityError(`EC2 has no capacity for this instance (${code}): ${detail}`, {
      cause: err,
      userMessage: 'EC2 has no capacity for this instance type right now; the job will be run again.',
    });
  }
  return new InstanceStartError(`could not start an EC2 instance: ${errorMessage(err)}`, { cause: err });
}

export class Ec2Backend implements Backend {
  readonly #settings: Ec2Settings;
  readonly #context: BackendContext;
  readonly #api: Ec2Api;
  readonly #customTags: Tag[];
  readonly #extraUserData: string;
  /** Instances the last `listManaged` found: `destroyManaged` terminates only these. */
  #managed = new Set<string>();
  /** When to ask whether a boot is done, learned from the last boots. */
  readonly #bootPolls: BootPolls;

  /** Takes settings that passed `validateSettings` (the loader's `validate` hook). */
  constructor(settings: Ec2Settings, context: BackendContext) {
    this.#settings = settings;
    this.#context = context;
    this.#customTags = parseCustomTags(settings.customTags);
    this.#extraUserData = decodeUserData(settings.userData);
    this.#api = new Ec2Api(settings, context);
    this.#bootPolls = new BootPolls(BOOT_POLL_FIRST_MS, settings.bootPollSleep);
  }

  /** The instance `start` would launch: its AMI (as resolved now) and instance type (from size and arch). */
  async shape(attributes: StartAttributes, signal: AbortSignal): Promise<MachineShape> {
    const { image, instanceType, mappedType } = await this.#machine(attributes, signal);
    return { key: `image=${image.imageId} type=${instanceType} vm_size=${mappedType ?? attributes.vmSize ?? '-'}`, image: image.name };
  }

  /**
   * The AMI (as resolved now) and instance type a job's instance gets: what
   * `start` launches and `shape` reports. `mappedType`: the type its
   * `vm_size` maps to, which travis reports as its size.
   */
  async #machine(attributes: StartAttributes, signal: AbortSignal): Promise<{ image: SelectedImage; instanceType: string; mappedType: string | undefined }> {
    const settings = this.#settings;
    const image = await resolveImage(imageSetting(attributes, settings.images, settings.imageDefault), this.#api, settings.imageOwners, signal);
    const mappedType = mappedInstanceType(attributes);
    return { image, mappedType, instanceType: mappedType ?? defaultInstanceType(attributes, settings) };
  }

  async start(attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    const { signal, progress, recordPhase } = options;
    const logger = options.logger.child({ backend: 'ec2' });
    signal.throwIfAborted();
    const began = Date.now();
    const settings = this.#settings;

    // travis reports a mapped size as the instance type it became.
    let mappedType: string | undefined;
    let request: RunInstancesRequest;
    let imageName: string;
    let keys: ReturnType<typeof generateJobKeyPair>;
    try {
      const machine = await this.#machine(attributes, signal);
      const { image, instanceType } = machine;
      mappedType = machine.mappedType;
      imageName = image.name;
      // Made here, held in memory only: its public half goes in the user data, its private half to SshMachine.
      keys = generateJobKeyPair();
      const clientToken = randomUUID();
      request = launchRequest({
        settings,
        image,
        instanceType,
        clientToken,
        userData: buildUserData({
          publicKey: keys.publicKey,
          user: settings.sshUser,
          extra: this.#extraUserData,
          ...(settings.autoImplode
            ? { implodeAfterMinutes: Math.ceil((attributes.hardTimeoutMs + LEASE_MARGIN_MS) / 60_000) }
            : {}),
        }),
        tags: jobTags({
          name: `travis-job-${clientToken}`,
          attributes,
          hostname: this.#context.hostname,
          createdAt: Date.now(),
          custom: this.#customTags,
        }),
      });
      progress(`Starting an EC2 ${instanceType}${settings.spot ? ' spot' : ''} instance from ${image.name} (${image.imageId}) in ${settings.region}`);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw startError(err);
    }

    let sent = 0;
    let launched: Ec2InstanceDescription | undefined;
    try {
      const createStarted = Date.now();
      launched = await this.#api.runInstances(request, signal, () => {
        sent += 1;
      });
      const id = launched.InstanceId as string;
      const created = Date.now();
      recordPhase('create', created - createStarted);
      logger.info({ instance: id, image: request.ImageId, instance_type: request.InstanceType }, 'instance launched');
      progress(`Instance ${id} created, waiting for it to run`);

      const running = await this.#waitUntilRunning(id, signal, progress, logger);
      const isRunning = Date.now();
      recordPhase('running', isRunning - created);
      const host = this.#address(running);
      recordPhase('ip', Date.now() - isRunning);
      const startupMs = Date.now() - began;
      progress(`Instance ${id} is running at ${host} (${(startupMs / 1000).toFixed(1)}s); waiting for SSH`);

      const api = this.#api;
      const pollMs = settings.bootPollSleep;
      const launchedAt = launchTimeOf(launched);
      const ssh = new SshMachine({
        id,
        imageName,
        startupMs,
        target: { host, port: SSH_PORT, username: settings.sshUser, privateKey: keys.privateKey },
        runCommand: settings.execCmd.trim(),
        dialTimeoutMs: settings.sshDialTimeout,
        retrySleepMs: settings.uploadRetrySleep,
        maxAttempts: settings.uploadRetries,
        logger,
      });
      return new Ec2Instance({
        ssh,
        vmSize: mappedType ?? attributes.vmSize,
        api,
        terminate: () => terminateInstance(id, { api, pollMs, logger, launchedAt, signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) }),
        uploadRetries: settings.uploadRetries,
        interruptionPollMs: settings.interruptionPollSleep,
        recordPhase,
        logger,
      });
    } catch (err) {
      await this.#cleanUp(request, launched, sent, err, logger);
      if (signal.aborted) throw signal.reason;
      throw startError(err, request);
    }
  }

  async close(): Promise<void> {
    await this.#api.close();
  }

  /** Every instance with mayfly's tags in the region, any worker's. */
  async listManaged(signal: AbortSignal): Promise<ManagedInstance[]> {
    const found = (await this.#api.describeInstances({ filters: MANAGED_FILTERS }, signal))
      .map((description) => managedInstance(description))
      .filter((instance) => instance !== undefined);
    this.#managed = new Set(found.map((instance) => instance.id));
    return found;
  }

  /** Terminate an instance the last `listManaged` returned (and only such an instance). */
  async destroyManaged(id: string, signal: AbortSignal): Promise<void> {
    if (!this.#managed.has(id)) throw new Error(`instance ${id} was not listed as one of mayfly's: not terminating it`);
    const logger = this.#context.logger.child({ instance: id });
    await terminateInstance(id, { api: this.#api, pollMs: this.#settings.bootPollSleep, logger, signal });
    this.#managed.delete(id);
  }

  /**
   * Terminate what a failed start launched, found by id or, when the
   * RunInstances answer never came, by client token.
   */
  async #cleanUp(
    request: RunInstancesRequest,
    launched: Ec2InstanceDescription | undefined,
    sent: number,
    err: unknown,
    logger: Logger,
  ): Promise<void> {
    const options = { api: this.#api, pollMs: this.#settings.bootPollSleep, logger, signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) };
    if (launched?.InstanceId !== undefined) {
      await terminateInstance(launched.InstanceId, { ...options, launchedAt: launchTimeOf(launched) }).catch((terminateErr: unknown) => {
        logger.error(
          { instance: launched.InstanceId, err: errorMessage(terminateErr) },
          'could not terminate the instance of a failed start: it may still be running, terminate it by hand',
        );
      });
      return;
    }
    // One attempt answered with an EC2 error launched nothing. An abort, a
    // transient failure, an answer that could not be used (EC2 may have
    // launched what it failed to describe), or several attempts (an earlier
    // one may have launched what a later error hides) leave the outcome unknown.
    const refused = err instanceof CloudCallError && err.kind !== 'transient' && !(err.cause instanceof MalformedAnswerError);
    if (sent > 0 && (!refused || sent > 1)) await terminateLostLaunch(request, options);
  }

  /**
   * Poll until the instance runs; throws if it ends instead (capacity, or
   * anything else). The pauses (boot-polls.ts) start at BOOT_POLL_FIRST_MS,
   * double up to BOOT_POLL_SLEEP and start short again at the usual boot
   * time: a boot is seen soon after it is done, and a long one is asked
   * about no more often than the setting allows. Each call goes through
   * the backend's rate limiter like any other.
   */
  async #waitUntilRunning(
    id: string,
    signal: AbortSignal,
    progress: (line: string) => void,
    logger: Logger,
  ): Promise<Ec2InstanceDescription> {
    const began = Date.now();
    let lastState = 'pending';
    /** When it was last seen pending: the boot ended after this, so it is what the polls learn (never more than the boot took). */
    let pendingAt = began;
    let lastProgress = began;
    const pauses = this.#bootPolls.pauses(began);
    for (;;) {
      await abortableSleep(pauses.next().value, signal);
      let found: Ec2InstanceDescription | undefined;
      try {
        [found] = await this.#api.describeInstances({ ids: [id] }, signal);
      } catch (err) {
        // Just launched: EC2 may not list it yet (eventual consistency).
        if (kindOf(err) !== 'not-found') throw err;
      }
      const state = found?.State?.Name ?? 'pending';
      if (state === 'running' && found !== undefined) {
        this.#bootPolls.record(pendingAt - began);
        return found;
      }
      if (state !== 'pending') {
        const reason = found?.StateReason;
        logger.warn({ instance: id, state, reason: reason?.Code }, 'instance ended while booting');
        const message = `instance ${id} is ${state} instead of running (${reason?.Code ?? 'no reason given'}: ${reason?.Message ?? ''})`;
        if (reason?.Code !== undefined && CAPACITY_STATE_REASONS.has(reason.Code)) throw new NoCapacityError(message);
        throw new InstanceStartError(message);
      }
      const now = Date.now();
      pendingAt = now;
      if (state !== lastState || now - lastProgress >= PROGRESS_EVERY_MS) {
        progress(`Instance ${id} is ${state} (${((now - began) / 1000).toFixed(0)}s)`);
        lastState = state;
        lastProgress = now;
      }
    }
  }

  /** Where to connect: the public IP with PUBLIC_IP_CONNECT when there is one, else the private IP (as travis). */
  #address(instance: Ec2InstanceDescription): string {
    const address =
      (this.#settings.publicIpConnect ? instance.PublicIpAddress : undefined) ?? instance.PrivateIpAddress ?? '';
    if (address === '') throw new InstanceStartError(`DescribeInstances answered that instance ${instance.InstanceId} is running but has no IP address`);
    return address;
  }
}
