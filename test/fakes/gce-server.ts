/**
 * A fake Google Compute Engine for tests: a loopback HTTP server speaking
 * the Compute REST v1 wire format exactly as `@google-cloud/compute` sends
 * it with `fallback: true` (logged first, then implemented):
 *
 *   POST   /compute/v1/projects/P/zones/Z/instances            insert -> operation
 *   GET    /compute/v1/projects/P/zones/Z/instances/NAME       get
 *   DELETE /compute/v1/projects/P/zones/Z/instances/NAME       delete -> operation
 *   GET    /compute/v1/projects/P/zones/Z/instances?filter=... list (labels.K = "V", labels.K:*)
 *   GET    /compute/v1/projects/P/zones/Z/operations/OP        get
 *   POST   /compute/v1/projects/P/zones/Z/operations/OP/wait   wait
 *   GET    /compute/v1/projects/P/global/images?filter=...     list (name eq RE)
 *   POST   /compute/v1/projects/P/zones/Z/instanceGroupManagers/M/deleteInstances
 *                                                               a managed group deletes members, lowering its target size
 *   GET    /computeMetadata/v1/...                              the metadata server (of the worker's own VM)
 *
 * Requests must carry a bearer JWT signed with the key of `accountJson`
 * (the backend signs its own, "self-signed JWT with scope"), or an access
 * token the metadata server handed out (what a host's own service account
 * uses). Errors come in
 * the API's JSON shape. Each inserted instance gets a real sshd on its own
 * 127.x address, port 22, that accepts only the keys of its `ssh-keys`
 * metadata; deleting the instance stops it. Inserts are checked against the
 * fake's networks as GCE checks them (a custom-mode network needs a
 * subnetwork of the VM's region; a Shared VPC's network and subnetworks
 * belong to its host project). Faults can be injected, and `record` keeps
 * every instance ever created with its final state.
 */
import { createVerify, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { nextLoopbackAddress, startSshd, type SshdTarget } from '../helpers/sshd.js';
import { isMalformed, type MalformedAnswer } from './malformed.js';

export type FakeGceOperationName =
  | 'instances.insert'
  | 'instances.get'
  | 'instances.delete'
  | 'instances.list'
  | 'zoneOperations.get'
  | 'zoneOperations.wait'
  | 'images.list'
  | 'instanceGroupManagers.deleteInstances';

/**
 * An error a request can be answered with instead of its result: an API
 * error, `reset` (the connection drops before the request is handled),
 * `drop` (the request is carried out, then the connection drops before the
 * answer), or a malformed 200 (see `MalformedGceAnswer`).
 */
export type FakeGceFault = 'throttled' | 'server' | 'quota' | 'reset' | 'drop' | MalformedGceAnswer;

/**
 * A 200 whose body is not what the API sends. `malformed-html`: a proxy's
 * error page, the request never reached the API. The others are the API's
 * own answer, spoiled after the request was carried out: `malformed-truncated`
 * (cut in half), `malformed-empty` (no body), `malformed-shape` (an operation
 * without `name` and `status`, an instance without network interfaces, a
 * list whose `items` is not a list), `malformed-state` (an
 * operation or instance status the API has no such value for),
 * `malformed-address` (an instance whose IPs are not IP addresses).
 */
export type MalformedGceAnswer = MalformedAnswer;

export interface FakeImage {
  name: string;
  /** RFC 3339, as the API writes it. */
  creationTimestamp: string;
  status?: 'READY' | 'PENDING' | 'FAILED';
  /** Default: the fake's project. */
  project?: string;
}

export interface FakeInstanceRecord {
  name: string;
  zone: string;
  status: 'PROVISIONING' | 'STAGING' | 'RUNNING' | 'STOPPING' | 'TERMINATED';
  /** True once a delete really removed it. */
  deleted: boolean;
  preempted: boolean;
  deleteRequests: number;
  labels: Record<string, string>;
  /** `metadata.items` as a map. */
  metadata: Record<string, string>;
  /** The resource as the client sent it. */
  resource: Record<string, unknown>;
  /** The instance's own loopback address (internal and external), once its sshd listens. */
  address?: string;
  createdAt: number;
  /** When its sshd started listening (ms since the epoch): the end of its boot as a client can see it. */
  sshdListeningAt?: number;
}

export interface FakeGceOptions {
  /** Default `mayfly-test`. */
  project?: string;
  /** How long an insert takes to reach DONE / RUNNING, in ms (besides starting sshd). Default 0. */
  bootMs?: number;
  /** See `FakeGce.sshdDelayMs`. Default 0. */
  sshdDelayMs?: number;
  images?: FakeImage[];
}

export interface FakeMetadata {
  projectId: string;
  /** A bare zone name; served as `projects/NUM/zones/ZONE` like the real server. */
  zone: string;
  network: string;
  /** `instance/name`, the VM's own name; absent: 404. */
  instanceName?: string;
  /** The access scopes of the VM's service-account token; absent: those GCE gives a VM by default. */
  scopes?: readonly string[];
  /** `instance/attributes/created-by`: set by GCE on an instance a managed group made. */
  createdBy?: string;
}

/**
 * The scopes GCE gives a VM created with "default access": Compute is not
 * among them, so a worker on such a VM's own credentials is refused every call.
 */
export const GCE_DEFAULT_SCOPES: readonly string[] = [
  'https://www.googleapis.com/auth/devstorage.read_only',
  'https://www.googleapis.com/auth/logging.write',
  'https://www.googleapis.com/auth/monitoring.write',
  'https://www.googleapis.com/auth/servicecontrol',
  'https://www.googleapis.com/auth/service.management.readonly',
  'https://www.googleapis.com/auth/trace.append',
];

/** A VPC network of the fake, in its own project or in a Shared VPC host project. */
export interface FakeNetwork {
  project: string;
  name: string;
  /** `auto`: a subnetwork named like the network in every region; `custom`: only `subnetworks`, and an insert must name one. */
  mode: 'auto' | 'custom';
  /** The subnetworks of a custom-mode network. */
  subnetworks?: { region: string; name: string }[];
}

/** A managed instance group: its target size, and the members it was asked to delete. */
export interface FakeManagedGroup {
  name: string;
  zone: string;
  targetSize: number;
  /** Each deleteInstances call: the instance URLs named, when, and how many job VMs were live then. */
  deletions: { instances: string[]; at: number; liveJobVms: number }[];
}

interface FakeOperation {
  name: string;
  zone: string;
  type: 'insert' | 'delete';
  target: string;
  status: 'PENDING' | 'RUNNING' | 'DONE';
  error?: { code: string; message: string };
  done: Promise<void>;
  finish(): void;
}

interface LiveInstance {
  record: FakeInstanceRecord;
  sshd?: SshdTarget;
  /** Resolves once sshd is up (or failed to start). */
  sshdStarted: Promise<void>;
  bootTimer?: NodeJS.Timeout;
  /** Ends the wait for a late sshd (`sshdDelayMs`) at once: the VM is going away. */
  skipSshdDelay?: () => void;
}

/** Resolves after `ms`, or at once when the returned `skip` is called. */
function skippableDelay(ms: number): { waited: Promise<void>; skip: () => void } {
  let skip!: () => void;
  const waited = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    skip = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { waited, skip };
}

interface InjectedFault {
  operation: FakeGceOperationName;
  zone?: string;
  remaining: number;
  fault: FakeGceFault;
}

const ERRORS: Record<Exclude<FakeGceFault, 'reset' | 'drop' | MalformedGceAnswer> | 'notFound' | 'unauthorized' | 'badRequest' | 'conflict', { code: number; reason: string; message: string }> = {
  throttled: { code: 429, reason: 'rateLimitExceeded', message: 'Rate Limit Exceeded' },
  server: { code: 503, reason: 'backendError', message: 'Internal error. Please try again or contact Google Support.' },
  quota: { code: 403, reason: 'quotaExceeded', message: "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1." },
  notFound: { code: 404, reason: 'notFound', message: 'The resource was not found' },
  unauthorized: { code: 401, reason: 'authError', message: 'Request is missing required authentication credential.' },
  badRequest: { code: 400, reason: 'invalid', message: 'Invalid value' },
  conflict: { code: 409, reason: 'alreadyExists', message: 'The resource already exists' },
};

/** What a misconfigured proxy in front of the API answers, with a 200. */
const PROXY_PAGE = '<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>';

/**
 * GPUs GCE attaches by `guestAccelerators`, and only to N1 machine types
 * (Compute Engine, "GPU machine types"). The fake keeps its own copy of the
 * rule rather than the backend's, so a backend that gets it wrong is refused.
 */
const N1_ONLY_GPUS = /^nvidia-tesla-(t4|v100|p100|p4)(-vws)?$/;

/** Why GCE refuses the machine type and accelerators of `resource`, if it does. */
function acceleratorProblem(resource: Record<string, unknown>): string | undefined {
  const machineType = String(resource['machineType'] ?? '').split('/').pop() ?? '';
  const accelerators = (resource['guestAccelerators'] as { acceleratorType?: string }[] | undefined) ?? [];
  for (const accelerator of accelerators) {
    const type = String(accelerator.acceleratorType ?? '').split('/').pop() ?? '';
    // As GCE words it when a GPU and a machine type don't go together.
    if (!N1_ONLY_GPUS.test(type) || !machineType.startsWith('n1-')) return `[${machineType}, ${type}] features are not compatible for creating instance.`;
  }
  return undefined;
}

/** Region of a zone (the fake's own copy of the rule): `us-central1-b` -> `us-central1`. */
const regionOfZone = (zone: string): string => zone.replace(/-[a-z]$/, '');

/** Project and name of a network URL (full, `projects/P/global/networks/N`, or `global/networks/N` in `project`). */
function networkRef(url: string, project: string): { project: string; name: string } | undefined {
  const match = /(?:^|\/)(?:projects\/([^/]+)\/)?global\/networks\/([^/]+)$/.exec(url);
  return match ? { project: match[1] ?? project, name: match[2] as string } : undefined;
}

/** Project, region and name of a subnetwork URL (full, `projects/P/regions/R/subnetworks/S`, or `regions/R/subnetworks/S` in `project`). */
function subnetworkRef(url: string, project: string): { project: string; region: string; name: string } | undefined {
  const match = /(?:^|\/)(?:projects\/([^/]+)\/)?regions\/([^/]+)\/subnetworks\/([^/]+)$/.exec(url);
  return match ? { project: match[1] ?? project, region: match[2] as string, name: match[3] as string } : undefined;
}

const hasSubnetwork = (network: FakeNetwork, region: string, name: string): boolean =>
  network.mode === 'auto' ? name === network.name : (network.subnetworks ?? []).some((subnet) => subnet.region === region && subnet.name === name);

/**
 * Why GCE refuses the first network interface of an insert into `zone` of
 * `project`, if it does (Compute API reference, `instances.insert`,
 * `networkInterfaces[].network` and `.subnetwork`): the network and
 * subnetwork must exist where their URLs say, the subnetwork must be in the
 * VM's region and of that network, and a custom-mode network needs one.
 */
function networkProblem(networks: readonly FakeNetwork[], resource: Record<string, unknown>, project: string, zone: string): { code: number; reason: string; message: string } | undefined {
  const nic = ((resource['networkInterfaces'] as { network?: string; subnetwork?: string }[] | undefined) ?? [])[0] ?? {};
  const invalid = (field: string, value: string, why: string) => ({ code: 400, reason: 'invalid', message: `Invalid value for field 'resource.networkInterfaces[0]${field}': '${value}'. ${why}` });
  const notFound = (path: string) => ({ code: 404, reason: 'notFound', message: `The resource '${path}' was not found` });
  const network = nic.network === undefined ? undefined : networkRef(nic.network, project);
  if (nic.network !== undefined && network === undefined) return invalid('.network', nic.network, 'The URL is malformed.');
  if (nic.subnetwork !== undefined) {
    const subnet = subnetworkRef(nic.subnetwork, project);
    if (subnet === undefined) return invalid('.subnetwork', nic.subnetwork, 'The URL is malformed.');
    const owner = networks.find((candidate) => candidate.project === subnet.project && hasSubnetwork(candidate, subnet.region, subnet.name));
    if (owner === undefined) return notFound(`projects/${subnet.project}/regions/${subnet.region}/subnetworks/${subnet.name}`);
    if (subnet.region !== regionOfZone(zone)) return invalid('.subnetwork', nic.subnetwork, `Subnetwork must be in region '${regionOfZone(zone)}' of the instance.`);
    if (network !== undefined && (network.project !== owner.project || network.name !== owner.name)) {
      return invalid('.subnetwork', nic.subnetwork, `Subnetwork does not belong to network 'projects/${network.project}/global/networks/${network.name}'.`);
    }
    return undefined;
  }
  const wanted = network ?? { project, name: 'default' };
  const found = networks.find((candidate) => candidate.project === wanted.project && candidate.name === wanted.name);
  if (found === undefined) return notFound(`projects/${wanted.project}/global/networks/${wanted.name}`);
  if (found.mode === 'custom') return invalid('', '', 'Subnetwork should be specified for custom subnetmode network');
  return undefined;
}

/** The IAM permission every request of an operation needs (Compute API reference, "IAM Permissions" of each method). */
const OPERATION_PERMISSIONS: Record<FakeGceOperationName, string> = {
  'instances.insert': 'compute.instances.create',
  'instances.get': 'compute.instances.get',
  'instances.delete': 'compute.instances.delete',
  'instances.list': 'compute.instances.list',
  'zoneOperations.get': 'compute.zoneOperations.get',
  'zoneOperations.wait': 'compute.zoneOperations.get',
  'images.list': 'compute.images.list',
  'instanceGroupManagers.deleteInstances': 'compute.instanceGroupManagers.update',
};

/**
 * The permissions an insert needs besides `compute.instances.create`, for
 * what its body asks (Compute Engine, "Create a VM": required permissions
 * per field): a new boot disk from an image, a subnetwork with or without
 * an external IP, metadata, labels and network tags.
 */
function insertPermissions(resource: Record<string, unknown>): string[] {
  const needed = ['compute.instances.create'];
  const disks = (resource['disks'] as { initializeParams?: { sourceImage?: string } }[] | undefined) ?? [];
  if (disks.some((disk) => disk.initializeParams !== undefined)) needed.push('compute.disks.create');
  if (disks.some((disk) => disk.initializeParams?.sourceImage !== undefined)) needed.push('compute.images.useReadOnly');
  const interfaces = (resource['networkInterfaces'] as { accessConfigs?: unknown[] }[] | undefined) ?? [];
  if (interfaces.length > 0) needed.push('compute.subnetworks.use');
  if (interfaces.some((entry) => (entry.accessConfigs ?? []).length > 0)) needed.push('compute.subnetworks.useExternalIp');
  if ((((resource['metadata'] as { items?: unknown[] } | undefined)?.items) ?? []).length > 0) needed.push('compute.instances.setMetadata');
  if (Object.keys((resource['labels'] as Record<string, string> | undefined) ?? {}).length > 0) needed.push('compute.instances.setLabels');
  if ((((resource['tags'] as { items?: unknown[] } | undefined)?.items) ?? []).length > 0) needed.push('compute.instances.setTags');
  return needed;
}

/** What a zone answers every insert with. */
export type ZoneFault = 'quota' | 'capacity';

const INSTANCE_NAME = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** How long `operations/OP/wait` holds a request before answering with the current state (the real API: up to 2 minutes). */
const WAIT_CAP_MS = 2_000;

function base64url(text: string): Buffer {
  return Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

/** The lines a startup script writes into an `authorized_keys` file through a here-document. */
function startupScriptKeys(script: string): string[] {
  const keys: string[] = [];
  for (const [, , body] of script.matchAll(/authorized_keys <<'?(\w+)'?\n([\s\S]*?)\n\1\n/g)) {
    keys.push(...(body ?? '').split('\n').map((line) => line.trim()).filter((line) => line !== ''));
  }
  return keys;
}

export class FakeGce {
  readonly project: string;
  /** Every request, in order: which API operation, the status answered. */
  readonly requests: { operation: string; method: string; path: string; status: number }[] = [];
  /** `insert` (record) when an instance is created, `preempted` (record), `deleted` (record), `request` (each answered request). */
  readonly events = new EventEmitter();
  /** Per insert, ms until DONE / RUNNING. */
  bootMs: number;
  /**
   * Per insert, ms after RUNNING until sshd listens, as on a real VM whose
   * guest boots after GCE calls it RUNNING (0: sshd listens before). Until
   * then connections to its address are refused.
   */
  sshdDelayMs: number;
  images: FakeImage[];
  /** What the metadata server says; undefined: it answers 404 (not on GCE). */
  metadata: FakeMetadata | undefined;
  /** The VPC networks inserts may use; at first the project's auto-mode `default`. */
  readonly networks: FakeNetwork[];
  /** Service-account key JSON (text) whose signatures this fake accepts. */
  readonly accountJson: string;
  /** Deletes still to be "lost": reported DONE while the instance stays. */
  lostDeletes = 0;
  /**
   * Whether VMs run Google's guest agent, which installs the keys of the
   * `ssh-keys` metadata. False: an image like travis', where only the keys
   * its startup script writes into `authorized_keys` open the VM.
   */
  guestAgent = true;
  /**
   * The project's `enable-oslogin=TRUE` metadata: the guest agent then
   * ignores `ssh-keys` on a VM unless the VM's own metadata turns OS Login
   * off (`enable-oslogin=FALSE`), as Compute Engine's OS Login page describes.
   */
  projectOsLogin = false;
  /**
   * The IAM permissions of the caller; undefined: every permission. A request
   * that needs one it lacks is refused with 403, naming it, as GCE does.
   */
  permissions: ReadonlySet<string> | undefined;
  readonly #publicKey: string;
  readonly #clientEmail: string;
  readonly #server: Server;
  readonly #instances = new Map<string, LiveInstance>();
  readonly #records: FakeInstanceRecord[] = [];
  readonly #operations = new Map<string, FakeOperation>();
  readonly #deletesUnderWay = new Set<Promise<void>>();
  readonly #faults: InjectedFault[] = [];
  readonly #zoneFaults = new Map<string, ZoneFault>();
  /** Machine and accelerator types a zone does not offer. */
  readonly #zoneLacks = new Map<string, Set<string>>();
  /** Answers to drop (fault `drop`): the work is done, the client never hears. */
  readonly #dropping = new WeakSet<ServerResponse>();
  /** Answers to spoil (a `malformed-*` fault other than `malformed-html`): the work is done, the client hears nonsense. */
  readonly #spoiling = new WeakMap<ServerResponse, MalformedGceAnswer>();
  /** Insert operations by `requestId`: a repeated request gets the first one's operation, as the API does. */
  readonly #byRequestId = new Map<string, FakeOperation>();
  /** Access tokens the metadata server handed out (`instance/service-accounts/default/token`). */
  readonly #metadataTokens = new Set<string>();
  /** Managed instance groups, by `zone/name`. */
  readonly managedGroups = new Map<string, FakeManagedGroup>();
  #closed = false;

  private constructor(server: Server, options: FakeGceOptions) {
    this.#server = server;
    this.project = options.project ?? 'mayfly-test';
    this.bootMs = options.bootMs ?? 0;
    this.sshdDelayMs = options.sshdDelayMs ?? 0;
    this.images = options.images ?? [];
    this.networks = [{ project: this.project, name: 'default', mode: 'auto' }];
    const { privateKey, publicKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    this.#publicKey = publicKey;
    this.#clientEmail = `mayfly-worker@${this.project}.iam.gserviceaccount.com`;
    this.accountJson = JSON.stringify({
      type: 'service_account',
      project_id: this.project,
      private_key_id: randomBytes(20).toString('hex'),
      private_key: privateKey,
      client_email: this.#clientEmail,
      client_id: '1234567890',
      token_uri: 'https://oauth2.googleapis.com/token',
    });
  }

  static async start(options: FakeGceOptions = {}): Promise<FakeGce> {
    const server = createServer();
    const fake = new FakeGce(server, options);
    server.on('request', (request: IncomingMessage, response: ServerResponse) => fake.#handle(request, response));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return fake;
  }

  /** `http://127.0.0.1:PORT`: the API endpoint, and the metadata host. */
  get endpoint(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** `127.0.0.1:PORT`, for `GCE_METADATA_HOST`-style settings. */
  get host(): string {
    return `127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Every instance ever created, with its state now. */
  get record(): readonly FakeInstanceRecord[] {
    return this.#records;
  }

  /** Instances that exist (running, booting or stopped but not deleted): what would still be billed. */
  liveInstances(): FakeInstanceRecord[] {
    return this.#records.filter((record) => !record.deleted);
  }

  /** Resolves once every delete accepted so far has finished (a caller that cannot read operations does not wait for them). */
  async deletesFinished(): Promise<void> {
    await Promise.all(this.#deletesUnderWay);
  }

  /** Answer the next `times` requests of `operation` (in `zone`, if given) with `fault`. */
  inject(operation: FakeGceOperationName, fault: FakeGceFault, times = 1, zone?: string): void {
    this.#faults.push({ operation, fault, remaining: times, ...(zone === undefined ? {} : { zone }) });
  }

  /** Every insert into `zone` fails: `quota` at once (403), `capacity` in its operation (ZONE_RESOURCE_POOL_EXHAUSTED). */
  zoneFault(zone: string, fault: ZoneFault | undefined): void {
    if (fault === undefined) this.#zoneFaults.delete(zone);
    else this.#zoneFaults.set(zone, fault);
  }

  /** `zone` does not offer the machine or accelerator type `type` (not every zone has every family or GPU). */
  zoneLacks(zone: string, type: string): void {
    this.#zoneLacks.set(zone, new Set([...(this.#zoneLacks.get(zone) ?? []), type]));
  }

  /** The 400 GCE answers an insert naming a type `zone` does not offer, if it does. */
  #notOffered(zone: string, resource: Record<string, unknown>): string | undefined {
    const lacks = this.#zoneLacks.get(zone);
    if (lacks === undefined) return undefined;
    const machineType = String(resource['machineType'] ?? '').split('/').pop() ?? '';
    if (lacks.has(machineType)) {
      return `Invalid value for field 'resource.machineType': '${String(resource['machineType'])}'. Machine type with name '${machineType}' does not exist in zone '${zone}'.`;
    }
    const accelerators = (resource['guestAccelerators'] as { acceleratorType?: string }[] | undefined) ?? [];
    for (const [index, accelerator] of accelerators.entries()) {
      const type = String(accelerator.acceleratorType ?? '').split('/').pop() ?? '';
      if (lacks.has(type)) {
        return `Invalid value for field 'resource.guestAccelerators[${index}].acceleratorType': '${String(accelerator.acceleratorType)}'. Accelerator type '${type}' does not exist in zone '${zone}'.`;
      }
    }
    return undefined;
  }

  /** Requests made of one API operation. */
  count(operation: FakeGceOperationName): number {
    return this.requests.filter((request) => request.operation === operation).length;
  }

  /** Preempt a running instance: it goes TERMINATED and its sshd (with every session) is stopped. */
  async preempt(name: string): Promise<void> {
    const live = [...this.#instances.values()].find((instance) => instance.record.name === name);
    if (!live) throw new Error(`no instance ${name}`);
    live.record.status = 'TERMINATED';
    live.record.preempted = true;
    await live.sshd?.stop();
    this.events.emit('preempted', live.record);
  }

  /**
   * An instance made behind the worker's back (by another worker, an earlier
   * run of this one, or by hand): RUNNING at once, with no sshd. `createdAt`
   * (ms since the epoch) lets it look old.
   */
  plant(options: { name: string; zone: string; labels: Record<string, string>; createdAt?: number }): FakeInstanceRecord {
    const record = this.#addRunning(options.name, options.zone, { labels: { ...options.labels } }, options.createdAt ?? Date.now());
    this.#records.push(record);
    return record;
  }

  /** A RUNNING instance without sshd, made outside `instances.insert`; `resource` adds to its name. */
  #addRunning(name: string, zone: string, resource: Record<string, unknown>, createdAt: number): FakeInstanceRecord {
    if (this.#instances.has(`${zone}/${name}`)) throw new Error(`instance ${name} exists`);
    const labels = (resource['labels'] as Record<string, string> | undefined) ?? {};
    const record: FakeInstanceRecord = {
      name,
      zone,
      status: 'RUNNING',
      deleted: false,
      preempted: false,
      deleteRequests: 0,
      labels,
      metadata: {},
      resource: { name, ...resource },
      createdAt,
    };
    this.#instances.set(`${zone}/${name}`, { record, sshdStarted: Promise.resolve() });
    return record;
  }

  /**
   * The worker itself runs on a VM of this fake, on `network` and
   * `subnetwork` (URLs, as instances.get answers them): the metadata server
   * answers for it and instances.get finds it. It is not a job VM, so
   * `record` and `liveInstances` leave it out.
   */
  workerVm(options: { name: string; zone: string; network: string; subnetwork?: string; scopes?: readonly string[]; createdBy?: string }): void {
    const nic = { network: options.network, ...(options.subnetwork === undefined ? {} : { subnetwork: options.subnetwork }) };
    this.#addRunning(options.name, options.zone, { networkInterfaces: [nic] }, Date.now());
    this.metadata = {
      projectId: this.project,
      zone: options.zone,
      network: options.network.split('/').pop() ?? options.network,
      instanceName: options.name,
      ...(options.scopes === undefined ? {} : { scopes: options.scopes }),
      ...(options.createdBy === undefined ? {} : { createdBy: options.createdBy }),
    };
  }

  /** A zonal managed instance group of `targetSize` instances. */
  addManagedGroup(zone: string, name: string, targetSize: number): FakeManagedGroup {
    const group: FakeManagedGroup = { name, zone, targetSize, deletions: [] };
    this.managedGroups.set(`${zone}/${name}`, group);
    return group;
  }

  /** Resolves with the next inserted instance's record. */
  async nextInsert(): Promise<FakeInstanceRecord> {
    const [record] = (await once(this.events, 'insert')) as [FakeInstanceRecord];
    return record;
  }

  /** Resolves once a request of `operation` has been answered. */
  async nextRequest(operation: FakeGceOperationName): Promise<void> {
    for (;;) {
      const [request] = (await once(this.events, 'request')) as [{ operation: string }];
      if (request.operation === operation) return;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const operation of this.#operations.values()) operation.finish();
    await Promise.all(
      [...this.#instances.values()].map(async (live) => {
        clearTimeout(live.bootTimer);
        live.skipSshdDelay?.();
        await live.sshdStarted;
        await live.sshd?.stop();
      }),
    );
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      this.#route(request, response, body).catch((err: unknown) => {
        this.#error(response, 'route', request, { code: 500, reason: 'internalError', message: String(err) });
      });
    });
  }

  async #route(request: IncomingMessage, response: ServerResponse, body: string): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://fake');
    const method = request.method ?? 'GET';
    const path = url.pathname;
    if (path.startsWith('/computeMetadata/v1/')) return this.#metadataServer(request, response, path.slice('/computeMetadata/v1/'.length));

    const zoned = /^\/compute\/v1\/projects\/([^/]+)\/zones\/([^/]+)\/(instances|operations|instanceGroupManagers)(?:\/([^/]+))?(\/wait|\/deleteInstances)?$/.exec(path);
    const images = /^\/compute\/v1\/projects\/([^/]+)\/global\/images$/.exec(path);
    let operation: FakeGceOperationName | undefined;
    if (zoned?.[3] === 'instances') {
      if (method === 'POST' && zoned[4] === undefined) operation = 'instances.insert';
      else if (method === 'GET' && zoned[4] === undefined) operation = 'instances.list';
      else if (method === 'GET') operation = 'instances.get';
      else if (method === 'DELETE') operation = 'instances.delete';
    } else if (zoned?.[3] === 'operations' && zoned[4] !== undefined) {
      if (method === 'GET' && zoned[5] === undefined) operation = 'zoneOperations.get';
      else if (method === 'POST' && zoned[5] === '/wait') operation = 'zoneOperations.wait';
    } else if (zoned?.[3] === 'instanceGroupManagers' && zoned[4] !== undefined) {
      if (method === 'POST' && zoned[5] === '/deleteInstances') operation = 'instanceGroupManagers.deleteInstances';
    } else if (images && method === 'GET') {
      operation = 'images.list';
    }
    if (operation === undefined) return this.#error(response, 'unknown', request, ERRORS.notFound);
    if (!this.#authorized(request)) return this.#error(response, operation, request, ERRORS.unauthorized);
    const needed = operation === 'instances.insert' ? insertPermissions(JSON.parse(body || '{}') as Record<string, unknown>) : [OPERATION_PERMISSIONS[operation]];
    const missing = needed.find((permission) => this.permissions !== undefined && !this.permissions.has(permission));
    if (missing !== undefined) {
      return this.#error(response, operation, request, { code: 403, reason: 'forbidden', message: `Required '${missing}' permission for '${path.replace('/compute/v1/', '')}'` });
    }

    const zone = zoned?.[2];
    const fault = this.#faults.find((f) => f.operation === operation && f.remaining > 0 && (f.zone === undefined || f.zone === zone));
    if (fault) {
      fault.remaining -= 1;
      if (fault.fault === 'drop') {
        this.#dropping.add(response);
      } else if (fault.fault === 'reset') {
        this.#log({ operation, method, path, status: 0 });
        request.socket.destroy();
        return;
      } else if (fault.fault === 'malformed-html') {
        this.#log({ operation, method, path, status: 200 });
        response.writeHead(200, { 'Content-Type': 'text/html' });
        response.end(PROXY_PAGE);
        return;
      } else if (isMalformed(fault.fault)) {
        this.#spoiling.set(response, fault.fault);
      } else {
        return this.#error(response, operation, request, ERRORS[fault.fault]);
      }
    }

    const project = (zoned?.[1] ?? images?.[1]) as string;
    const name = zoned?.[4];
    switch (operation) {
      case 'instances.insert': {
        const previous = this.#byRequestId.get(url.searchParams.get('requestId') ?? '');
        if (previous) return this.#json(response, operation, request, this.#operationJson(previous));
        return this.#insert(request, response, project, zone as string, body, url.searchParams.get('requestId'));
      }
      case 'instances.get': {
        const live = this.#instances.get(`${zone}/${name}`);
        if (!live || project !== this.project) return this.#error(response, operation, request, ERRORS.notFound);
        return this.#json(response, operation, request, this.#instanceJson(live.record));
      }
      case 'instances.list': {
        const matches = this.#labelFilter(url.searchParams.get('filter') ?? '');
        const items = [...this.#instances.values()]
          .filter((live) => live.record.zone === zone && matches(live.record.labels))
          .map((live) => this.#instanceJson(live.record));
        return this.#json(response, operation, request, { kind: 'compute#instanceList', items });
      }
      case 'instances.delete': {
        // As for inserts: a request id GCE has seen answers with that request's operation, and nothing is done twice.
        const requestId = url.searchParams.get('requestId');
        const previous = this.#byRequestId.get(requestId ?? '');
        if (previous) return this.#json(response, operation, request, this.#operationJson(previous));
        return this.#delete(request, response, zone as string, name as string, requestId);
      }
      case 'instanceGroupManagers.deleteInstances':
        return this.#deleteGroupMembers(request, response, project, zone as string, name as string, body);
      case 'zoneOperations.get':
      case 'zoneOperations.wait': {
        const op = this.#operations.get(name as string);
        if (!op || op.zone !== zone) return this.#error(response, operation, request, ERRORS.notFound);
        if (operation === 'zoneOperations.wait' && op.status !== 'DONE') {
          await Promise.race([op.done, new Promise((resolve) => setTimeout(resolve, WAIT_CAP_MS).unref())]);
        }
        return this.#json(response, operation, request, this.#operationJson(op));
      }
      case 'images.list': {
        const filter = /^name\s+eq\s+(.+)$/.exec((url.searchParams.get('filter') ?? '').trim());
        let pattern: RegExp | undefined;
        try {
          pattern = filter?.[1] === undefined ? undefined : new RegExp(`^(?:${filter[1]})$`);
        } catch {
          return this.#error(response, operation, request, ERRORS.badRequest);
        }
        const items = this.images
          .filter((image) => (image.project ?? this.project) === project)
          .filter((image) => pattern === undefined || pattern.test(image.name))
          .map((image) => ({
            kind: 'compute#image',
            id: String(Math.abs(hash(image.name))),
            name: image.name,
            creationTimestamp: image.creationTimestamp,
            status: image.status ?? 'READY',
            selfLink: `https://www.googleapis.com/compute/v1/projects/${project}/global/images/${image.name}`,
          }));
        return this.#json(response, operation, request, { kind: 'compute#imageList', items });
      }
    }
  }

  /** A group's deleteInstances: the members named go, the target size drops by as many (an instance not in the group is refused, as GCE does). */
  #deleteGroupMembers(request: IncomingMessage, response: ServerResponse, project: string, zone: string, name: string, body: string): void {
    const operationName: FakeGceOperationName = 'instanceGroupManagers.deleteInstances';
    const group = this.managedGroups.get(`${zone}/${name}`);
    if (!group || project !== this.project) return this.#error(response, operationName, request, ERRORS.notFound);
    const instances = (JSON.parse(body || '{}') as { instances?: unknown }).instances;
    const member = new RegExp(`^(?:.*/)?zones/${zone}/instances/[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$`);
    if (!Array.isArray(instances) || instances.length === 0 || !instances.every((url) => typeof url === 'string' && member.test(url))) {
      return this.#error(response, operationName, request, { ...ERRORS.badRequest, message: "Invalid value for field 'resource.instances'" });
    }
    group.deletions.push({ instances: instances as string[], at: Date.now(), liveJobVms: this.liveInstances().length });
    group.targetSize = Math.max(0, group.targetSize - instances.length);
    const op = this.#newOperation(zone, 'delete', String(instances[0]).split('/').pop() as string);
    op.finish();
    this.events.emit('group-deletion', group);
    return this.#json(response, operationName, request, this.#operationJson(op));
  }

  #authorized(request: IncomingMessage): boolean {
    const match = /^Bearer (.+)$/.exec(request.headers.authorization ?? '');
    if (match?.[1] !== undefined && this.#metadataTokens.has(match[1])) return true;
    const parts = match?.[1]?.split('.');
    if (parts?.length !== 3) return false;
    const [header, payload, signature] = parts as [string, string, string];
    const verifier = createVerify('RSA-SHA256');
    verifier.update(`${header}.${payload}`);
    if (!verifier.verify(this.#publicKey, base64url(signature))) return false;
    const claims = JSON.parse(base64url(payload).toString('utf8')) as { iss?: string; exp?: number; scope?: string };
    return claims.iss === this.#clientEmail && (claims.exp ?? 0) * 1000 > Date.now() && (claims.scope ?? '').includes('compute');
  }

  #metadataServer(request: IncomingMessage, response: ServerResponse, key: string): void {
    if (request.headers['metadata-flavor'] !== 'Google') {
      response.writeHead(403).end('Missing Metadata-Flavor:Google header.');
      return;
    }
    if (this.metadata && key === 'instance/service-accounts/default/token') {
      const token = `ya29.fake-${randomUUID()}`;
      this.#metadataTokens.add(token);
      this.requests.push({ operation: `metadata:${key}`, method: request.method ?? 'GET', path: key, status: 200 });
      response.writeHead(200, { 'Metadata-Flavor': 'Google', 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ access_token: token, expires_in: 3599, token_type: 'Bearer' }));
      return;
    }
    const values: Record<string, string> | undefined = this.metadata && {
      ...(this.metadata.instanceName === undefined ? {} : { 'instance/name': this.metadata.instanceName }),
      ...(this.metadata.createdBy === undefined ? {} : { 'instance/attributes/created-by': this.metadata.createdBy }),
      'project/project-id': this.metadata.projectId,
      'instance/zone': `projects/123456789/zones/${this.metadata.zone}`,
      'instance/network-interfaces/0/network': `projects/123456789/networks/${this.metadata.network}`,
      // One scope a line, as the real server lists them.
      'instance/service-accounts/default/scopes': `${(this.metadata.scopes ?? GCE_DEFAULT_SCOPES).join('\n')}\n`,
    };
    const value = values?.[key];
    this.requests.push({ operation: `metadata:${key}`, method: request.method ?? 'GET', path: key, status: value === undefined ? 404 : 200 });
    response.writeHead(value === undefined ? 404 : 200, { 'Metadata-Flavor': 'Google', 'Content-Type': 'application/text' });
    response.end(value ?? 'Not Found');
  }

  async #insert(
    request: IncomingMessage,
    response: ServerResponse,
    project: string,
    zone: string,
    body: string,
    requestId: string | null,
  ): Promise<void> {
    const operationName: FakeGceOperationName = 'instances.insert';
    const resource = JSON.parse(body || '{}') as Record<string, unknown>;
    const name = String(resource['name'] ?? '');
    if (project !== this.project || !INSTANCE_NAME.test(name)) return this.#error(response, operationName, request, ERRORS.badRequest);
    if (this.#instances.has(`${zone}/${name}`)) return this.#error(response, operationName, request, ERRORS.conflict);
    const incompatible = acceleratorProblem(resource);
    if (incompatible !== undefined) return this.#error(response, operationName, request, { ...ERRORS.badRequest, message: incompatible });
    const scheduling = (resource['scheduling'] as { maxRunDuration?: unknown; instanceTerminationAction?: string } | undefined) ?? {};
    if (scheduling.maxRunDuration !== undefined && !['STOP', 'DELETE'].includes(scheduling.instanceTerminationAction ?? '')) {
      // As GCE: a run-time limit needs to say what happens when it is reached.
      return this.#error(response, operationName, request, {
        ...ERRORS.badRequest,
        message: "Invalid value for field 'resource.scheduling.instanceTerminationAction': ''. instanceTerminationAction must be set when maxRunDuration is specified.",
      });
    }
    const unusableNetwork = networkProblem(this.networks, resource, project, zone);
    if (unusableNetwork !== undefined) return this.#error(response, operationName, request, unusableNetwork);
    const notOffered = this.#notOffered(zone, resource);
    if (notOffered !== undefined) return this.#error(response, operationName, request, { ...ERRORS.badRequest, message: notOffered });
    const zoneFault = this.#zoneFaults.get(zone);
    if (zoneFault === 'quota') return this.#error(response, operationName, request, ERRORS.quota);

    const op = this.#newOperation(zone, 'insert', name);
    if (requestId) this.#byRequestId.set(requestId, op);
    if (zoneFault === 'capacity') {
      // As GCE: the insert is accepted, its operation fails, and no instance is left.
      op.error = {
        code: 'ZONE_RESOURCE_POOL_EXHAUSTED',
        message: `The zone 'projects/${project}/zones/${zone}' does not have enough resources available to fulfill the request.`,
      };
      setTimeout(() => op.finish(), this.bootMs).unref();
      return this.#json(response, operationName, request, this.#operationJson(op));
    }

    const items = ((resource['metadata'] as { items?: { key: string; value: string }[] } | undefined)?.items ?? []);
    const metadata = Object.fromEntries(items.map((item) => [item.key, item.value]));
    const record: FakeInstanceRecord = {
      name,
      zone,
      status: 'PROVISIONING',
      deleted: false,
      preempted: false,
      deleteRequests: 0,
      labels: (resource['labels'] as Record<string, string> | undefined) ?? {},
      metadata,
      resource,
      createdAt: Date.now(),
    };
    // Only the keys the worker handed over open the VM: `user:key` lines of ssh-keys for the guest agent, else the startup script's.
    const osLogin = (metadata['enable-oslogin'] ?? (this.projectOsLogin ? 'TRUE' : 'FALSE')).toUpperCase() === 'TRUE';
    const authorizedKeys = this.guestAgent
      ? (osLogin ? '' : (metadata['ssh-keys'] ?? ''))
          .split('\n')
          .map((line) => line.slice(line.indexOf(':') + 1).trim())
          .filter((key) => key !== '')
      : startupScriptKeys(metadata['startup-script'] ?? '');
    const live: LiveInstance = { record, sshdStarted: Promise.resolve() };
    this.#instances.set(`${zone}/${name}`, live);
    this.#records.push(record);
    this.events.emit('insert', record);
    if (this.sshdDelayMs > 0) this.#bootWithLateSshd(live, op, authorizedKeys);
    else this.#bootWithSshd(live, op, authorizedKeys);
    return this.#json(response, operationName, request, this.#operationJson(op));
  }

  /** sshd listens first, then the VM is RUNNING after `bootMs`. */
  #bootWithSshd(live: LiveInstance, op: FakeOperation, authorizedKeys: string[]): void {
    const { record } = live;
    live.sshdStarted = startSshd({ authorizedKeys, port: 22 }).then(
      async (sshd) => {
        if (record.deleted || this.#closed) {
          await sshd.stop();
          return;
        }
        live.sshd = sshd;
        record.sshdListeningAt = Date.now();
        record.address = sshd.host;
        record.status = 'STAGING';
      },
      () => {
        record.status = 'TERMINATED';
      },
    );
    const booted = Date.now() + this.bootMs;
    void live.sshdStarted.then(() => {
      if (record.deleted || record.status === 'TERMINATED') return op.finish();
      live.bootTimer = setTimeout(() => {
        if (record.status === 'STAGING') record.status = 'RUNNING';
        op.finish();
      }, Math.max(0, booted - Date.now()));
    });
  }

  /** RUNNING (with its address) after `bootMs`; sshd listens `sshdDelayMs` later. */
  #bootWithLateSshd(live: LiveInstance, op: FakeOperation, authorizedKeys: string[]): void {
    const { record } = live;
    const host = nextLoopbackAddress();
    record.status = 'STAGING';
    record.address = host;
    live.bootTimer = setTimeout(() => {
      if (record.status === 'STAGING') record.status = 'RUNNING';
      op.finish();
    }, this.bootMs);
    const late = skippableDelay(this.bootMs + this.sshdDelayMs);
    live.skipSshdDelay = late.skip;
    live.sshdStarted = late.waited.then(async () => {
      if (record.deleted || record.status !== 'RUNNING' || this.#closed) return;
      try {
        live.sshd = await startSshd({ authorizedKeys, host, port: 22 });
        record.sshdListeningAt = Date.now();
      } catch {
        record.status = 'TERMINATED';
      }
    });
  }

  async #delete(request: IncomingMessage, response: ServerResponse, zone: string, name: string, requestId: string | null): Promise<void> {
    const operationName: FakeGceOperationName = 'instances.delete';
    const live = this.#instances.get(`${zone}/${name}`);
    if (!live) return this.#error(response, operationName, request, ERRORS.notFound);
    live.record.deleteRequests += 1;
    const op = this.#newOperation(zone, 'delete', name);
    if (requestId) this.#byRequestId.set(requestId, op);
    if (this.lostDeletes > 0) {
      // Reported done; the instance stays as it was.
      this.lostDeletes -= 1;
      op.finish();
      return this.#json(response, operationName, request, this.#operationJson(op));
    }
    live.record.status = 'STOPPING';
    clearTimeout(live.bootTimer);
    live.skipSshdDelay?.();
    this.#instances.delete(`${zone}/${name}`);
    const deleting = (async () => {
      await live.sshdStarted;
      await live.sshd?.stop();
      live.record.status = 'TERMINATED';
      live.record.deleted = true;
      op.finish();
      this.events.emit('deleted', live.record);
    })();
    this.#deletesUnderWay.add(deleting);
    void deleting.finally(() => this.#deletesUnderWay.delete(deleting));
    return this.#json(response, operationName, request, this.#operationJson(op));
  }

  #newOperation(zone: string, type: 'insert' | 'delete', target: string): FakeOperation {
    let finish!: () => void;
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const op: FakeOperation = {
      name: `operation-${Date.now()}-${randomUUID()}`,
      zone,
      type,
      target,
      status: 'RUNNING',
      done,
      finish: () => {
        op.status = 'DONE';
        finish();
      },
    };
    this.#operations.set(op.name, op);
    return op;
  }

  #operationJson(op: FakeOperation): Record<string, unknown> {
    const zoneUrl = `https://www.googleapis.com/compute/v1/projects/${this.project}/zones/${op.zone}`;
    return {
      kind: 'compute#operation',
      id: String(Math.abs(hash(op.name))),
      name: op.name,
      zone: zoneUrl,
      operationType: op.type,
      targetLink: `${zoneUrl}/instances/${op.target}`,
      status: op.status,
      progress: op.status === 'DONE' ? 100 : 0,
      selfLink: `${zoneUrl}/operations/${op.name}`,
      ...(op.status === 'DONE' && op.error ? { error: { errors: [op.error] } } : {}),
    };
  }

  #instanceJson(record: FakeInstanceRecord): Record<string, unknown> {
    const zoneUrl = `https://www.googleapis.com/compute/v1/projects/${this.project}/zones/${record.zone}`;
    const nics = (record.resource['networkInterfaces'] as Record<string, unknown>[] | undefined) ?? [{}];
    return {
      ...record.resource,
      kind: 'compute#instance',
      id: String(Math.abs(hash(record.name))),
      zone: zoneUrl,
      status: record.status,
      labels: record.labels,
      creationTimestamp: new Date(record.createdAt).toISOString(),
      selfLink: `${zoneUrl}/instances/${record.name}`,
      networkInterfaces: nics.map((nic, index) => ({
        ...nic,
        name: `nic${index}`,
        ...(record.address === undefined ? {} : { networkIP: record.address }),
        accessConfigs: ((nic['accessConfigs'] as Record<string, unknown>[] | undefined) ?? []).map((access) => ({
          ...access,
          ...(record.address === undefined ? {} : { natIP: record.address }),
        })),
      })),
    };
  }

  /** `labels.K = "V"` and `labels.K:*` (K is set) terms joined by AND (what the backend and tests send). */
  #labelFilter(filter: string): (labels: Record<string, string>) => boolean {
    const terms = [...filter.matchAll(/labels\.([a-z0-9_-]+)\s*=\s*"?([^"\s)]*)"?/g)].map((m) => [m[1] as string, m[2] as string] as const);
    const present = [...filter.matchAll(/labels\.([a-z0-9_-]+):\*/g)].map((m) => m[1] as string);
    return (labels) => terms.every(([key, value]) => labels[key] === value) && present.every((key) => key in labels);
  }

  #log(entry: { operation: string; method: string; path: string; status: number }): void {
    this.requests.push(entry);
    this.events.emit('request', entry);
  }

  #json(response: ServerResponse, operation: string, request: IncomingMessage, body: unknown): void {
    if (this.#dropping.has(response)) {
      this.#log({ operation, method: request.method ?? '', path: request.url ?? '', status: 0 });
      request.socket.destroy();
      return;
    }
    this.#log({ operation, method: request.method ?? '', path: request.url ?? '', status: 200 });
    response.writeHead(200, { 'Content-Type': 'application/json; charset=UTF-8' });
    const spoiled = this.#spoiling.get(response);
    const text = JSON.stringify(spoiled === undefined ? body : spoil(body as Record<string, unknown>, spoiled));
    if (spoiled === 'malformed-truncated') response.end(text.slice(0, Math.floor(text.length / 2)));
    else response.end(spoiled === 'malformed-empty' ? '' : text);
  }

  #error(response: ServerResponse, operation: string, request: IncomingMessage, error: { code: number; reason: string; message: string }): void {
    this.#log({ operation, method: request.method ?? '', path: request.url ?? '', status: error.code });
    response.writeHead(error.code, { 'Content-Type': 'application/json; charset=UTF-8' });
    response.end(
      JSON.stringify({
        error: { code: error.code, message: error.message, errors: [{ message: error.message, domain: 'global', reason: error.reason }] },
      }),
    );
  }
}


/** `body` (an operation, instance or list) as `fault` spoils it; truncation and emptiness are applied to the text. */
function spoil(body: Record<string, unknown>, fault: MalformedGceAnswer): Record<string, unknown> {
  const isList = String(body['kind']).endsWith('List');
  const one = (item: Record<string, unknown>): Record<string, unknown> => {
    const instance = item['kind'] === 'compute#instance';
    switch (fault) {
      case 'malformed-shape': {
        const spoiled = { ...item };
        if (instance) {
          delete spoiled['networkInterfaces'];
        } else {
          delete spoiled['name'];
          delete spoiled['status'];
        }
        return spoiled;
      }
      case 'malformed-state':
        return instance || item['kind'] === 'compute#operation' ? { ...item, status: 'MELTING' } : item;
      case 'malformed-address':
        if (!instance) return item;
        return {
          ...item,
          networkInterfaces: ((item['networkInterfaces'] as Record<string, unknown>[] | undefined) ?? []).map((nic) => ({
            ...nic,
            networkIP: 'localhost; rm -rf /',
            accessConfigs: ((nic['accessConfigs'] as Record<string, unknown>[] | undefined) ?? []).map((access) => ({ ...access, natIP: '999.1.2.3' })),
          })),
        };
      default:
        return item;
    }
  };
  if (!isList) return one(body);
  if (fault === 'malformed-shape') return { ...body, items: { notA: 'list' } };
  return { ...body, items: (body['items'] as Record<string, unknown>[]).map(one) };
}

function hash(text: string): number {
  let h = 0;
  for (const char of text) h = (Math.imul(h, 31) + char.charCodeAt(0)) | 0;
  return h;
}
