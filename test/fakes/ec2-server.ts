/**
 * A fake EC2 for tests: a loopback HTTP server speaking the EC2 Query API
 * as @aws-sdk/client-ec2 sends it (form-encoded POSTs, SigV4 with the
 * fake's static keys, XML answers), for RunInstances, DescribeInstances,
 * TerminateInstances and DescribeImages.
 *
 * Each instance is real enough to run a job: RunInstances decodes the user
 * data, takes the SSH public key from it, and after `bootDelayMs` starts a
 * real sshd on port 22 of the instance's own 127.x address (its private and
 * public IP) that accepts only that key; TerminateInstances stops it.
 *
 * Faults can be injected per action (throttling, 5xx, capacity, quota,
 * malformed answers),
 * terminations can be lost, RunInstances answers withheld, and running
 * instances interrupted (spot) or stopped. `instances` keeps every instance
 * ever launched with its final state, so a test can check none is left.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { nextLoopbackAddress, startSshd, type SshdTarget } from '../helpers/sshd.js';
import { memberList, QueryError, readQueryParams, signedBy, type QueryParams, type XmlValue } from './aws-query.js';
import { errorXml, filters, responseXml, tagSpecification, wildcardMatch } from './ec2-xml.js';
import { listenOnLoopback, loopbackUrl } from './loopback-server.js';
import { isMalformed, type MalformedAnswer } from './malformed.js';

export type Ec2Action = 'RunInstances' | 'DescribeInstances' | 'TerminateInstances' | 'DescribeImages';
export type InstanceStateName = 'pending' | 'running' | 'shutting-down' | 'terminated' | 'stopping' | 'stopped';

const STATE_CODES: Record<InstanceStateName, number> = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};
const GONE: ReadonlySet<InstanceStateName> = new Set(['shutting-down', 'terminated']);
const API_VERSION = '2016-11-15';
const OWNER_ID = '123456789012';
const ZONE_SUFFIX = 'a';
const SSH_PORT = 22;

/** An injectable failure, as EC2 (or something between it and the worker) answers it. */
export type Ec2Fault = 'throttle' | 'server-error' | 'unavailable' | 'capacity' | 'quota' | 'vcpu-quota' | 'unsupported' | 'drop' | MalformedEc2Answer;

/**
 * A 200 whose body is not what EC2 sends. `malformed-html`: a debugging
 * proxy's error page (echoing the request's Authorization header), the
 * request never reached EC2. The others are EC2's own answer, spoiled after
 * the action was carried out: `malformed-truncated` (cut in half),
 * `malformed-empty` (no body), `malformed-shape` (the action's result set,
 * `instancesSet`/`reservationSet`/`imagesSet`, left out), `malformed-state`
 * (instance states EC2 has no such name for), `malformed-address` (private
 * and public IPs that are not IP addresses).
 */
export type MalformedEc2Answer = MalformedAnswer;

/** `drop`: the request is lost on the way: nothing happens and no answer comes. */
const FAULTS: Record<Exclude<Ec2Fault, 'drop' | MalformedEc2Answer>, { status: number; code: string; message: string }> = {
  // EC2 answers throttling with 503 and capacity with 500 (EC2 API reference, "Error codes").
  throttle: { status: 503, code: 'RequestLimitExceeded', message: 'Request limit exceeded.' },
  'server-error': { status: 500, code: 'InternalError', message: 'An internal error has occurred.' },
  unavailable: { status: 503, code: 'Unavailable', message: 'The server is overloaded and cannot handle the request.' },
  capacity: {
    status: 500,
    code: 'InsufficientInstanceCapacity',
    message: 'We currently do not have sufficient capacity in the Availability Zone you requested.',
  },
  quota: {
    status: 400,
    code: 'InstanceLimitExceeded',
    message: 'You have requested more instances than your current instance limit allows.',
  },
  'vcpu-quota': {
    status: 400,
    code: 'VcpuLimitExceeded',
    message: 'You have requested more vCPU capacity than your current vCPU limit allows.',
  },
  unsupported: {
    status: 400,
    code: 'Unsupported',
    message: 'Your requested instance type is not supported in your requested Availability Zone.',
  },
};

export interface FakeEc2Image {
  imageId: string;
  name: string;
  /** ISO 8601. */
  creationDate: string;
  ownerId: string;
  ownerAlias?: string;
  rootDeviceName: string;
  state: 'available' | 'pending' | 'failed';
  /** Default `x86_64`. */
  architecture: 'x86_64' | 'arm64';
}

export interface FakeEc2Instance {
  instanceId: string;
  reservationId: string;
  clientToken: string;
  imageId: string;
  instanceType: string;
  state: InstanceStateName;
  stateReason?: { code: string; message: string };
  /** Instance tags as RunInstances set them (the fake has no CreateTags: tags exist from the start or never). */
  tags: Record<string, string>;
  volumeTags: Record<string, string>;
  spot: boolean;
  /** The user data, decoded. */
  userData: string;
  /** The SSH public key found in the user data, if any. */
  publicKey: string | undefined;
  privateIp: string;
  publicIp: string | undefined;
  associatePublicIp: boolean;
  launchTime: Date;
  /** Until this moment (ms since the epoch) EC2 does not show the instance yet: see `notVisibleMs`. */
  visibleAt: number;
  /**
   * Whether the instance metadata service wants IMDSv2 session tokens
   * (`required`) or also answers IMDSv1 (`optional`, EC2's default for an
   * AMI that does not say otherwise).
   */
  httpTokens: 'optional' | 'required';
  /** Every RunInstances parameter, as sent. */
  params: Record<string, string>;
  /** TerminateInstances calls naming it (lost ones included). */
  terminateRequests: number;
  /** The running sshd, while there is one. */
  sshd: SshdTarget | undefined;
  /** When its sshd started listening (ms since the epoch): the end of its boot as a client can see it. */
  sshdListeningAt?: number;
}

/** One API call the fake answered, for assertions. */
export interface FakeEc2Call {
  action: string;
  params: Record<string, string>;
  status: number;
  errorCode?: string;
  /** The malformed answer it got instead of EC2's. */
  malformed?: MalformedEc2Answer;
}

export interface FakeEc2Options {
  /** pending -> running after this long, in ms; default 50. */
  bootDelayMs?: number;
  /** See `FakeEc2.notVisibleMs`; default 0. */
  notVisibleMs?: number;
  /** See `FakeEc2.sshdDelayMs`; default 0. */
  sshdDelayMs?: number;
}

export interface InterruptOptions {
  /** The state AWS puts the instance in; default `terminated` (spot interruption). */
  state?: 'terminated' | 'stopped';
  /** `stateReason.code`; default `Server.SpotInstanceTermination`. */
  reason?: string;
  /** Kill sshd (the machine is gone) or leave connections up (only the API knows); default true. */
  dropSsh?: boolean;
}

/** The result set of each action's answer, which `malformed-shape` leaves out. */
const RESULT_SETS: Record<Ec2Action, string> = {
  RunInstances: 'instancesSet',
  DescribeInstances: 'reservationSet',
  TerminateInstances: 'instancesSet',
  DescribeImages: 'imagesSet',
};


/** Graviton types (a1, and families with a `g` after the generation: m6g, t4g, c7gn, ...) are arm64; the rest x86_64. */
const architectureOf = (instanceType: string): 'x86_64' | 'arm64' => (/^(a1|[a-z]+\d+g[a-z]*)\./.test(instanceType) ? 'arm64' : 'x86_64');

/** Instance types EC2 launches without EBS optimization only (EC2 User Guide, "EBS-optimized instance types"): t1, t2 and m1.small. */
const NOT_EBS_OPTIMIZABLE = /^(t1\.|t2\.|m1\.small$)/;

const hexId = (prefix: string): string => `${prefix}-${randomBytes(9).toString('hex').slice(0, 17)}`;

/** The first authorized_keys line in user data (shell script, cloud-config or MIME multi-part). */
function publicKeyIn(userData: string): string | undefined {
  return /(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+(?: [^\s'"]+)?/.exec(userData)?.[0];
}

export class FakeEc2 extends EventEmitter {
  readonly accessKeyId = 'AKIAFAKEMAYFLYTEST01';
  readonly secretAccessKey = 'fake-secret-access-key-for-tests';
  readonly region = 'eu-west-1';
  /** Every instance ever launched, in launch order, with its current (final) state. */
  readonly instances: FakeEc2Instance[] = [];
  /** Every call answered (or withheld), in order. */
  readonly calls: FakeEc2Call[] = [];
  readonly images: FakeEc2Image[] = [];
  bootDelayMs: number;
  /**
   * For this long after RunInstances, EC2 does not show the instance it
   * launched (eventual consistency): DescribeInstances and
   * TerminateInstances naming it answer `InvalidInstanceID.NotFound` and
   * filters do not list it, while it boots all the same.
   */
  notVisibleMs: number;
  /**
   * How long after an instance is running its sshd starts listening, in ms,
   * as on a real instance whose guest boots after EC2 calls it running (0:
   * sshd listens before). Until then connections to it are refused.
   */
  sshdDelayMs: number;
  /**
   * The IAM actions the caller is allowed (`ec2:RunInstances`, ...);
   * undefined: every action. A call needing one it lacks is refused with
   * 403 `UnauthorizedOperation`, naming it, as IAM's messages do.
   */
  permissions: ReadonlySet<string> | undefined;
  /**
   * Whether the account has EC2 Spot's service-linked role. Without it, the
   * first spot launch creates it when the caller may
   * (`iam:CreateServiceLinkedRole`), and fails as EC2 does otherwise.
   */
  spotRoleExists = true;
  /**
   * The most instances one DescribeInstances page holds, besides the
   * caller's MaxResults (EC2 may answer fewer than asked); default no limit.
   */
  maxPageSize = Number.POSITIVE_INFINITY;
  /** While true, RunInstances launches the instance but never answers (the answer is "lost"). */
  withholdRunInstances = false;

  readonly #server: Server;
  readonly #faults = new Map<string, Ec2Fault[]>();
  #lostTerminations = 0;
  readonly #bootTimers = new Map<string, NodeJS.Timeout>();
  readonly #booting = new Map<string, Promise<void>>();
  readonly #withheld = new Set<ServerResponse>();
  /** Actions whose calls wait, not yet carried out, until released (`hold`). */
  readonly #holds = new Map<string, Promise<void>>();
  #closed = false;

  private constructor(server: Server, options: FakeEc2Options) {
    super();
    this.#server = server;
    this.bootDelayMs = options.bootDelayMs ?? 50;
    this.sshdDelayMs = options.sshdDelayMs ?? 0;
    this.notVisibleMs = options.notVisibleMs ?? 0;
  }

  static async start(options: FakeEc2Options = {}): Promise<FakeEc2> {
    const server = createServer();
    const fake = new FakeEc2(server, options);
    server.on('request', (request, response) => void fake.#handle(request, response));
    await listenOnLoopback(server);
    return fake;
  }

  /** The URL to give the SDK (`endpoint`). */
  get endpoint(): string {
    return loopbackUrl(this.#server);
  }

  /** Instances not (being) terminated: pending, running, stopping or stopped. */
  live(): FakeEc2Instance[] {
    return this.instances.filter((instance) => !GONE.has(instance.state));
  }

  instance(id: string): FakeEc2Instance {
    const found = this.instances.find((instance) => instance.instanceId === id);
    if (!found) throw new Error(`no instance ${id}`);
    return found;
  }

  /** Calls of one action so far. */
  callsOf(action: Ec2Action): FakeEc2Call[] {
    return this.calls.filter((call) => call.action === action);
  }

  /** Register an AMI; returns its id. */
  registerImage(image: Partial<FakeEc2Image> & { name: string }): string {
    const registered: FakeEc2Image = {
      imageId: image.imageId ?? hexId('ami'),
      creationDate: new Date().toISOString(),
      ownerId: OWNER_ID,
      rootDeviceName: '/dev/sda1',
      state: 'available',
      architecture: 'x86_64',
      ...image,
    };
    this.images.push(registered);
    return registered.imageId;
  }

  /** The next `count` calls of `action` fail with `fault` (queued after faults already injected). */
  failNext(action: Ec2Action, count: number, fault: Ec2Fault): void {
    const queue = this.#faults.get(action) ?? [];
    for (let i = 0; i < count; i++) queue.push(fault);
    this.#faults.set(action, queue);
  }

  /** The next `count` TerminateInstances are acknowledged ("shutting-down") but change nothing. */
  loseTerminations(count: number): void {
    this.#lostTerminations += count;
  }

  /** Forget injected faults (between tests). */
  resetFaults(): void {
    this.#faults.clear();
    this.#lostTerminations = 0;
    this.withholdRunInstances = false;
  }

  /**
   * An instance launched behind the worker's back (by another worker, an
   * earlier run of this one, or by hand): running at once, with no sshd.
   * `launchTime` lets it look old.
   */
  plant(options: { tags: Record<string, string>; launchTime?: Date }): FakeEc2Instance {
    const instance: FakeEc2Instance = {
      instanceId: hexId('i'),
      reservationId: hexId('r'),
      clientToken: '',
      imageId: this.images[0]?.imageId ?? hexId('ami'),
      instanceType: 'm1.small',
      state: 'running',
      tags: { ...options.tags },
      volumeTags: {},
      spot: false,
      userData: '',
      publicKey: undefined,
      privateIp: nextLoopbackAddress(),
      publicIp: undefined,
      associatePublicIp: false,
      launchTime: options.launchTime ?? new Date(),
      visibleAt: 0,
      httpTokens: 'optional',
      params: {},
      terminateRequests: 0,
      sshd: undefined,
    };
    this.instances.push(instance);
    return instance;
  }

  /**
   * Calls of `action` from now on wait, not yet carried out, until `release`:
   * a moment of the test's choosing in the middle of what the worker does.
   * `arrived` resolves when the first such call comes in.
   */
  hold(action: Ec2Action): { arrived: Promise<void>; release: () => void } {
    let release!: () => void;
    this.#holds.set(action, new Promise<void>((resolve) => (release = resolve)));
    const arrived = new Promise<void>((resolve) => {
      const onCall = (call: FakeEc2Call): void => {
        if (call.action !== action) return;
        this.off('held', onCall);
        resolve();
      };
      this.on('held', onCall);
    });
    return {
      arrived,
      release: () => {
        this.#holds.delete(action);
        release();
      },
    };
  }

  /** AWS takes a running instance away: a spot interruption by default, or a stop. */
  async interrupt(id: string, options: InterruptOptions = {}): Promise<void> {
    const instance = this.instance(id);
    const reason = options.reason ?? 'Server.SpotInstanceTermination';
    this.#setState(instance, options.state ?? 'terminated', { code: reason, message: `${reason}: taken by the fake` });
    if (options.dropSsh ?? true) await this.#stopSshd(instance);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#bootTimers.values()) clearTimeout(timer);
    this.#bootTimers.clear();
    for (const response of this.#withheld) response.destroy();
    await Promise.all([...this.#booting.values()]);
    await Promise.all(this.instances.map((instance) => this.#stopSshd(instance)));
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const requestId = randomBytes(16).toString('hex');
    const params = await readQueryParams(request);
    const action = params.get('Action') ?? '';
    const call: FakeEc2Call = { action, params: Object.fromEntries(params), status: 200 };
    this.calls.push(call);
    const held = this.#holds.get(action);
    if (held) {
      this.emit('held', call);
      await held;
    }
    try {
      const body = await this.#dispatch(request, action, params, call);
      if (body === undefined) {
        // Withheld: the client waits until it gives up (or the fake closes).
        this.#withheld.add(response);
        response.on('close', () => this.#withheld.delete(response));
        this.emit('call', call);
        return;
      }
      if (call.malformed === undefined) {
        response.writeHead(200, { 'content-type': 'text/xml;charset=UTF-8' });
        response.end(responseXml(action, requestId, body));
      } else {
        response.writeHead(200, { 'content-type': call.malformed === 'malformed-html' ? 'text/html' : 'text/xml;charset=UTF-8' });
        response.end(spoiledAnswer(call.malformed, action as Ec2Action, requestId, body, request.headers.authorization ?? ''));
      }
    } catch (err) {
      const failure = err instanceof QueryError ? err : new QueryError(500, 'InternalError', String(err));
      call.status = failure.status;
      call.errorCode = failure.code;
      response.writeHead(failure.status, { 'content-type': 'text/xml;charset=UTF-8' });
      response.end(errorXml(failure.code, failure.message, requestId));
    }
    this.emit('call', call);
  }

  async #dispatch(request: IncomingMessage, action: string, params: QueryParams, call: FakeEc2Call): Promise<Record<string, XmlValue> | undefined> {
    if (request.method !== 'POST') throw new QueryError(400, 'InvalidAction', 'EC2 Query requests are POSTs here');
    if (!signedBy(request, this.accessKeyId)) {
      throw new QueryError(401, 'AuthFailure', 'AWS was not able to validate the provided access credentials');
    }
    if (params.get('Version') !== API_VERSION) throw new QueryError(400, 'InvalidParameterValue', `unsupported Version ${params.get('Version')}`);
    this.#authorize(action, params);
    const fault = this.#faults.get(action)?.shift();
    if (fault === 'drop') return undefined;
    if (fault !== undefined && isMalformed(fault)) {
      call.malformed = fault;
      // The proxy answered: nothing reached EC2.
      if (fault === 'malformed-html') return {};
    } else if (fault !== undefined) {
      const { status, code, message } = FAULTS[fault];
      throw new QueryError(status, code, message);
    }
    switch (action) {
      case 'RunInstances':
        return this.#runInstances(params);
      case 'DescribeInstances':
        return this.#describeInstances(params);
      case 'TerminateInstances':
        return this.#terminateInstances(params);
      case 'DescribeImages':
        return this.#describeImages(params);
      default:
        throw new QueryError(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
    }
  }

  /**
   * Refuses a call the caller's `permissions` don't allow. Tagging in
   * RunInstances needs `ec2:CreateTags` besides `ec2:RunInstances` (EC2 user
   * guide, "Grant permission to tag resources during creation").
   */
  #authorize(action: string, params: QueryParams): void {
    if (this.permissions === undefined) return;
    const needed = [`ec2:${action}`];
    if (action === 'RunInstances' && params.has('TagSpecification.1.ResourceType')) needed.push('ec2:CreateTags');
    const missing = needed.find((permission) => !this.permissions?.has(permission));
    if (missing === undefined) return;
    throw new QueryError(
      403,
      'UnauthorizedOperation',
      `You are not authorized to perform this operation. User: arn:aws:iam::${OWNER_ID}:user/mayfly is not authorized to perform: ${missing} because no identity-based policy allows the ${missing} action`,
    );
  }

  #runInstances(params: QueryParams): Record<string, XmlValue> | undefined {
    const token = params.get('ClientToken') ?? '';
    const earlier = token === '' ? undefined : this.instances.find((instance) => instance.clientToken === token);
    if (earlier) return this.#withheldOr(this.#reservation(earlier));
    if (params.get('MinCount') !== '1' || params.get('MaxCount') !== '1') {
      throw new QueryError(400, 'InvalidParameterValue', 'the fake launches exactly one instance per call');
    }
    const imageId = params.get('ImageId') ?? '';
    const image = this.images.find((candidate) => candidate.imageId === imageId);
    if (!image) throw new QueryError(400, 'InvalidAMIID.NotFound', `The image id '[${imageId}]' does not exist`);
    const typeArchitecture = architectureOf(params.get('InstanceType') ?? 'm1.small');
    if (typeArchitecture !== image.architecture) {
      throw new QueryError(
        400,
        'InvalidParameterValue',
        `The architecture '${typeArchitecture}' of the specified instance type does not match the architecture '${image.architecture}' of the specified AMI. Specify an instance type and an AMI that have matching architectures, and try again.`,
      );
    }
    if (params.get('EbsOptimized') === 'true' && NOT_EBS_OPTIMIZABLE.test(params.get('InstanceType') ?? 'm1.small')) {
      // As EC2 answers it: the same code as a zone without the type, a message that names no zone.
      throw new QueryError(400, 'Unsupported', 'EBS-optimized instances are not supported for your requested configuration. Please check the documentation for supported configurations.');
    }
    const httpTokens = params.get('MetadataOptions.HttpTokens') ?? 'optional';
    if (httpTokens !== 'optional' && httpTokens !== 'required') {
      throw new QueryError(400, 'InvalidParameterValue', `Value (${httpTokens}) for parameter HttpTokens is invalid.`);
    }
    const spot = params.get('InstanceMarketOptions.MarketType') === 'spot';
    const maxPrice = params.get('InstanceMarketOptions.SpotOptions.MaxPrice');
    // As EC2: a spot price is a decimal of at least USD 0.001 per hour (the fake's own copy of the rule, not the backend's).
    if (spot && maxPrice !== undefined && !(/^\d+(\.\d+)?$/.test(maxPrice) && Number(maxPrice) >= 0.001)) {
      throw new QueryError(400, 'InvalidParameterValue', `Value (${maxPrice}) for parameter maxPrice is invalid. The value must be a price of at least 0.001.`);
    }
    if (spot && !this.spotRoleExists) {
      if (this.permissions !== undefined && !this.permissions.has('iam:CreateServiceLinkedRole')) {
        throw new QueryError(403, 'AuthFailure.ServiceLinkedRoleCreationNotPermitted', 'The provided credentials do not have permission to create the service-linked role for EC2 Spot Instances.');
      }
      this.spotRoleExists = true;
    }
    const userData = Buffer.from(params.get('UserData') ?? '', 'base64').toString('utf8');
    const instance: FakeEc2Instance = {
      instanceId: hexId('i'),
      reservationId: hexId('r'),
      clientToken: token,
      imageId,
      instanceType: params.get('InstanceType') ?? 'm1.small',
      state: 'pending',
      tags: tagSpecification(params, 'instance'),
      volumeTags: tagSpecification(params, 'volume'),
      spot,
      userData,
      publicKey: publicKeyIn(userData),
      privateIp: nextLoopbackAddress(),
      publicIp: undefined,
      associatePublicIp: params.get('NetworkInterface.1.AssociatePublicIpAddress') !== 'false',
      launchTime: new Date(),
      visibleAt: Date.now() + this.notVisibleMs,
      httpTokens,
      params: Object.fromEntries(params),
      terminateRequests: 0,
      sshd: undefined,
    };
    this.instances.push(instance);
    this.#bootTimers.set(
      instance.instanceId,
      setTimeout(() => this.#boot(instance), this.bootDelayMs),
    );
    this.emit('launched', instance);
    return this.#withheldOr(this.#reservation(instance));
  }

  #withheldOr(body: Record<string, XmlValue>): Record<string, XmlValue> | undefined {
    return this.withholdRunInstances ? undefined : body;
  }

  #boot(instance: FakeEc2Instance): void {
    this.#bootTimers.delete(instance.instanceId);
    if (instance.state !== 'pending' || this.#closed) return;
    if (this.sshdDelayMs > 0) {
      // Running (with its addresses) now, sshd later: connections are refused until then.
      if (instance.associatePublicIp) instance.publicIp = instance.privateIp;
      this.#setState(instance, 'running');
      this.#bootTimers.set(
        instance.instanceId,
        setTimeout(() => this.#startSshd(instance, 'running'), this.sshdDelayMs),
      );
      return;
    }
    this.#startSshd(instance, 'pending');
  }

  /** Start the instance's sshd; an instance no longer in `expected` state by then is left without one. */
  #startSshd(instance: FakeEc2Instance, expected: InstanceStateName): void {
    this.#bootTimers.delete(instance.instanceId);
    if (instance.state !== expected || this.#closed) return;
    const booting = startSshd({
      authorizedKeys: instance.publicKey ? [instance.publicKey] : [],
      host: instance.privateIp,
      port: SSH_PORT,
    }).then(
      async (sshd) => {
        if (instance.state !== expected || this.#closed) {
          await sshd.stop(); // terminated while booting
          return;
        }
        instance.sshd = sshd;
        instance.sshdListeningAt = Date.now();
        if (expected === 'running') return;
        if (instance.associatePublicIp) instance.publicIp = instance.privateIp;
        this.#setState(instance, 'running');
      },
      (err: unknown) => {
        this.#setState(instance, 'terminated', { code: 'Server.InternalError', message: `sshd failed: ${String(err)}` });
      },
    );
    this.#booting.set(instance.instanceId, booting);
    void booting.finally(() => this.#booting.delete(instance.instanceId));
  }

  #setState(instance: FakeEc2Instance, state: InstanceStateName, reason?: { code: string; message: string }): void {
    instance.state = state;
    if (reason) instance.stateReason = reason;
    this.emit(state, instance);
  }

  async #stopSshd(instance: FakeEc2Instance): Promise<void> {
    await this.#booting.get(instance.instanceId);
    const sshd = instance.sshd;
    instance.sshd = undefined;
    await sshd?.stop();
  }

  /** The instances EC2 shows now. */
  #visible(): FakeEc2Instance[] {
    const now = Date.now();
    return this.instances.filter((instance) => instance.visibleAt <= now);
  }

  #known(ids: string[]): FakeEc2Instance[] {
    const visible = this.#visible();
    return ids.map((id) => {
      const found = visible.find((instance) => instance.instanceId === id);
      if (!found) throw new QueryError(400, 'InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`);
      return found;
    });
  }

  #describeInstances(params: QueryParams): Record<string, XmlValue> {
    const ids = memberList(params, 'InstanceId');
    let selected = ids.length > 0 ? this.#known(ids) : this.#visible();
    for (const filter of filters(params)) {
      const matches = (instance: FakeEc2Instance): boolean => {
        if (filter.name === 'client-token') return filter.values.includes(instance.clientToken);
        if (filter.name === 'instance-id') return filter.values.includes(instance.instanceId);
        if (filter.name === 'instance-state-name') return filter.values.includes(instance.state);
        if (filter.name === 'tag-key') return filter.values.some((key) => key in instance.tags);
        if (filter.name.startsWith('tag:')) {
          const value = instance.tags[filter.name.slice(4)];
          return value !== undefined && filter.values.some((pattern) => wildcardMatch(pattern, value));
        }
        throw new QueryError(400, 'InvalidParameterValue', `The filter '${filter.name}' is invalid`);
      };
      selected = selected.filter(matches);
    }
    // Paging, as EC2: only when asked (MaxResults 5-1000, never with ids); NextToken is where the next page starts.
    const maxResults = params.get('MaxResults');
    let nextToken: string | undefined;
    if (maxResults !== undefined) {
      if (ids.length > 0) throw new QueryError(400, 'InvalidParameterCombination', 'The parameter instancesSet cannot be used with the parameter maxResults');
      const size = Number(maxResults);
      if (!Number.isInteger(size) || size < 5 || size > 1000) throw new QueryError(400, 'InvalidParameterValue', `Value ( ${maxResults} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.`);
      const start = Number(params.get('NextToken') ?? '0');
      const end = start + Math.min(size, this.maxPageSize);
      if (end < selected.length) nextToken = String(end);
      selected = selected.slice(start, end);
    }
    const reservations = new Map<string, FakeEc2Instance[]>();
    for (const instance of selected) reservations.set(instance.reservationId, [...(reservations.get(instance.reservationId) ?? []), instance]);
    return {
      reservationSet: [...reservations.entries()].map(([reservationId, instances]) => ({
        reservationId,
        ownerId: OWNER_ID,
        groupSet: [],
        instancesSet: instances.map((instance) => this.#instanceXml(instance)),
      })),
      ...(nextToken === undefined ? {} : { nextToken }),
    };
  }

  async #terminateInstances(params: QueryParams): Promise<Record<string, XmlValue>> {
    const instances = this.#known(memberList(params, 'InstanceId'));
    const lost = this.#lostTerminations > 0;
    if (lost) this.#lostTerminations -= 1;
    const changes = await Promise.all(
      instances.map(async (instance) => {
        instance.terminateRequests += 1;
        const previous = instance.state;
        if (!lost && !GONE.has(previous)) {
          clearTimeout(this.#bootTimers.get(instance.instanceId));
          this.#bootTimers.delete(instance.instanceId);
          this.#setState(instance, 'shutting-down', { code: 'Client.UserInitiatedShutdown', message: 'Client.UserInitiatedShutdown: User initiated shutdown' });
          await this.#stopSshd(instance);
          this.#setState(instance, 'terminated');
        }
        const current = lost && !GONE.has(previous) ? 'shutting-down' : previous === 'terminated' ? 'terminated' : 'shutting-down';
        return {
          instanceId: instance.instanceId,
          currentState: { code: STATE_CODES[current], name: current },
          previousState: { code: STATE_CODES[previous], name: previous },
        };
      }),
    );
    return { instancesSet: changes };
  }

  #describeImages(params: QueryParams): Record<string, XmlValue> {
    const ids = memberList(params, 'ImageId');
    const owners = memberList(params, 'Owner');
    for (const id of ids) {
      if (!this.images.some((image) => image.imageId === id)) {
        throw new QueryError(400, 'InvalidAMIID.NotFound', `The image id '[${id}]' does not exist`);
      }
    }
    let selected = this.images.filter((image) => ids.length === 0 || ids.includes(image.imageId));
    if (owners.length > 0) {
      selected = selected.filter((image) =>
        owners.some((owner) => (owner === 'self' ? image.ownerId === OWNER_ID : owner === image.ownerId || owner === image.ownerAlias)),
      );
    }
    for (const filter of filters(params)) {
      const field = (image: FakeEc2Image): string => {
        if (filter.name === 'name') return image.name;
        if (filter.name === 'state') return image.state;
        if (filter.name === 'image-id') return image.imageId;
        throw new QueryError(400, 'InvalidParameterValue', `The filter '${filter.name}' is invalid`);
      };
      selected = selected.filter((image) => filter.values.some((pattern) => wildcardMatch(pattern, field(image))));
    }
    return {
      imagesSet: selected.map((image) => ({
        imageId: image.imageId,
        imageLocation: `${image.ownerId}/${image.name}`,
        imageState: image.state,
        imageOwnerId: image.ownerId,
        imageOwnerAlias: image.ownerAlias,
        creationDate: image.creationDate,
        isPublic: false,
        architecture: image.architecture,
        imageType: 'machine',
        name: image.name,
        rootDeviceType: 'ebs',
        rootDeviceName: image.rootDeviceName,
        virtualizationType: 'hvm',
      })),
    };
  }

  #reservation(instance: FakeEc2Instance): Record<string, XmlValue> {
    return {
      reservationId: instance.reservationId,
      ownerId: OWNER_ID,
      groupSet: [],
      instancesSet: [this.#instanceXml(instance)],
    };
  }

  #instanceXml(instance: FakeEc2Instance): XmlValue {
    return {
      instanceId: instance.instanceId,
      imageId: instance.imageId,
      instanceState: { code: STATE_CODES[instance.state], name: instance.state },
      privateDnsName: `ip-${instance.privateIp.replaceAll('.', '-')}.${this.region}.compute.internal`,
      dnsName: instance.publicIp === undefined ? '' : `ec2-${instance.publicIp.replaceAll('.', '-')}.compute.amazonaws.com`,
      reason: '',
      amiLaunchIndex: 0,
      instanceType: instance.instanceType,
      launchTime: instance.launchTime.toISOString(),
      placement: { availabilityZone: `${this.region}${ZONE_SUFFIX}`, tenancy: 'default' },
      monitoring: { state: 'disabled' },
      privateIpAddress: instance.privateIp,
      ipAddress: instance.publicIp,
      stateReason: instance.stateReason,
      clientToken: instance.clientToken,
      instanceLifecycle: instance.spot ? 'spot' : undefined,
      architecture: 'x86_64',
      rootDeviceType: 'ebs',
      tagSet: Object.entries(instance.tags).map(([key, value]) => ({ key, value })),
    };
  }
}

/** What a `MalformedEc2Answer` makes of EC2's answer `body` to `action`. */
function spoiledAnswer(fault: MalformedEc2Answer, action: Ec2Action, requestId: string, body: Record<string, XmlValue>, authorization: string): string {
  switch (fault) {
    case 'malformed-html':
      return `<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr><p>upstream went away while handling</p><pre>POST / HTTP/1.1\nAuthorization: ${authorization}</pre></body></html>`;
    case 'malformed-empty':
      return '';
    case 'malformed-truncated': {
      const text = responseXml(action, requestId, body);
      return text.slice(0, Math.floor(text.length / 2));
    }
    case 'malformed-shape': {
      const spoiled = { ...body };
      delete spoiled[RESULT_SETS[action]];
      return responseXml(action, requestId, spoiled);
    }
    case 'malformed-state':
      return responseXml(action, requestId, rewrite(body, { instanceState: { code: 99, name: 'exploded' }, currentState: { code: 99, name: 'exploded' } }));
    case 'malformed-address':
      return responseXml(action, requestId, rewrite(body, { privateIpAddress: '10.0.0.256', ipAddress: 'localhost' }));
  }
}

/** `value` with each of `fields` replaced wherever an element has it. */
function rewrite<T extends XmlValue>(value: T, fields: Record<string, XmlValue>): T {
  if (Array.isArray(value)) return value.map((item) => rewrite(item, fields)) as T;
  if (typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([tag, child]) => [tag, tag in fields ? fields[tag] : rewrite(child, fields)])) as T;
}
