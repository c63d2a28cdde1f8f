/**
 * A fake EC2 Auto Scaling on loopback, speaking the Query API (API version
 * 2011-01-01) as @aws-sdk/client-auto-scaling sends it, for
 * `AWS_ENDPOINT_URL_AUTO_SCALING`: form-encoded POSTs signed with SigV4 by
 * the fake's key, XML answers in Auto Scaling's namespace, errors as
 * `<ErrorResponse>`. It keeps groups, their lifecycle hooks and instances:
 *
 *   DescribeAutoScalingInstances    the group and lifecycle state of the instances named
 *   RecordLifecycleActionHeartbeat  extends a pending lifecycle action
 *   CompleteLifecycleAction         ends it: CONTINUE lets the termination go on
 *   TerminateInstanceInAutoScalingGroup  the group terminates an instance, lowering its desired capacity if asked
 *
 * A heartbeat or completion for a hook the group does not have, or for an
 * instance with no lifecycle action pending, is refused with AWS's
 * `ValidationError`. Every call is recorded in `calls`, and each emits
 * `call`, for assertions.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { escapeXml, memberList, QueryError, readQueryParams, signedBy, xml, type QueryParams, type XmlValue } from './aws-query.js';
import { listenOnLoopback, loopbackUrl } from './loopback-server.js';

export const AUTOSCALING_XMLNS = 'http://autoscaling.amazonaws.com/doc/2011-01-01/';
const API_VERSION = '2011-01-01';
const ACCOUNT_ID = '123456789012';

export type AutoScalingAction =
  | 'DescribeAutoScalingInstances'
  | 'RecordLifecycleActionHeartbeat'
  | 'CompleteLifecycleAction'
  | 'TerminateInstanceInAutoScalingGroup';

/** Lifecycle states of an instance in a group (the ones the fake uses). */
export type FakeLifecycleState = 'InService' | 'Terminating:Wait' | 'Terminating:Proceed' | 'Terminated';

export interface FakeAsgInstance {
  instanceId: string;
  groupName: string;
  lifecycleState: FakeLifecycleState;
  /** The hook whose action is pending (while `Terminating:Wait`). */
  pendingHook?: string;
  /** `CONTINUE` or `ABANDON`, once completed. */
  result?: string;
}

export interface FakeAutoScalingCall {
  action: string;
  params: Record<string, string>;
  status: number;
  errorCode?: string;
  /** When the fake answered (ms since the epoch), to order calls against other events. */
  at: number;
}

export class FakeAutoScaling extends EventEmitter<{ call: [FakeAutoScalingCall] }> {
  readonly accessKeyId = 'AKIDFAKEAUTOSCALING1';
  readonly secretAccessKey = randomBytes(20).toString('base64');
  readonly calls: FakeAutoScalingCall[] = [];
  readonly instances = new Map<string, FakeAsgInstance>();
  /** group name -> its termination lifecycle hooks. */
  readonly groups = new Map<string, Set<string>>();
  /** group name -> its desired capacity (one per instance added; lowered by a termination that asks to). */
  readonly desiredCapacity = new Map<string, number>();
  /** When set, calls whose `autoscaling:<Action>` is not in it are refused with AccessDenied. */
  permissions: ReadonlySet<string> | undefined;
  readonly #server: Server;

  private constructor(server: Server) {
    super();
    this.#server = server;
  }

  static async start(): Promise<FakeAutoScaling> {
    const server = createServer();
    const fake = new FakeAutoScaling(server);
    server.on('request', (request, response) => void fake.#handle(request, response));
    await listenOnLoopback(server);
    return fake;
  }

  /** For `AWS_ENDPOINT_URL_AUTO_SCALING`. */
  get endpoint(): string {
    return loopbackUrl(this.#server);
  }

  /** A group with a termination lifecycle hook per name in `hooks`. */
  addGroup(name: string, hooks: string[] = []): void {
    this.groups.set(name, new Set(hooks));
  }

  /** `instanceId` joins `groupName`, in service. */
  addInstance(groupName: string, instanceId: string): void {
    if (!this.groups.has(groupName)) throw new Error(`no group ${groupName}`);
    this.instances.set(instanceId, { instanceId, groupName, lifecycleState: 'InService' });
    this.desiredCapacity.set(groupName, (this.desiredCapacity.get(groupName) ?? 0) + 1);
  }

  /**
   * The group scales in `instanceId`: with a termination hook it waits in
   * `Terminating:Wait` for the hook's action to complete (the instance's
   * IMDS then reads `Terminated` as the target state; set that on the FakeImds).
   */
  scaleIn(instanceId: string): void {
    const instance = this.#instance(instanceId);
    const [hook] = this.groups.get(instance.groupName) ?? [];
    if (hook === undefined) {
      instance.lifecycleState = 'Terminated';
      return;
    }
    instance.lifecycleState = 'Terminating:Wait';
    instance.pendingHook = hook;
  }

  callsOf(action: AutoScalingAction): FakeAutoScalingCall[] {
    return this.calls.filter((call) => call.action === action);
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #instance(instanceId: string): FakeAsgInstance {
    const instance = this.instances.get(instanceId);
    if (!instance) throw new Error(`no instance ${instanceId}`);
    return instance;
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    const params = await readQueryParams(request);
    const action = params.get('Action') ?? '';
    const call: FakeAutoScalingCall = { action, params: Object.fromEntries(params), status: 200, at: Date.now() };
    this.calls.push(call);
    try {
      const result = this.#dispatch(request, action, params);
      response.writeHead(200, { 'content-type': 'text/xml' });
      response.end(responseXml(action, requestId, result));
    } catch (err) {
      const failure = err instanceof QueryError ? err : new QueryError(500, 'InternalFailure', String(err));
      call.status = failure.status;
      call.errorCode = failure.code;
      response.writeHead(failure.status, { 'content-type': 'text/xml' });
      response.end(errorXml(failure, requestId));
    }
    this.emit('call', call);
  }

  #dispatch(request: IncomingMessage, action: string, params: QueryParams): Record<string, XmlValue> | undefined {
    if (request.method !== 'POST') throw new QueryError(400, 'InvalidAction', 'Query requests are POSTs here');
    if (!signedBy(request, this.accessKeyId)) throw new QueryError(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
    if (params.get('Version') !== API_VERSION) throw new QueryError(400, 'InvalidParameterValue', `unsupported Version ${params.get('Version')}`);
    if (this.permissions !== undefined && !this.permissions.has(`autoscaling:${action}`)) {
      throw new QueryError(403, 'AccessDenied', `User: arn:aws:sts::${ACCOUNT_ID}:assumed-role/mayfly-host is not authorized to perform: autoscaling:${action}`);
    }
    switch (action) {
      case 'DescribeAutoScalingInstances':
        return this.#describeInstances(params);
      case 'RecordLifecycleActionHeartbeat':
        this.#pendingAction(params);
        return undefined;
      case 'CompleteLifecycleAction':
        return this.#complete(params);
      case 'TerminateInstanceInAutoScalingGroup':
        return this.#terminate(params);
      default:
        throw new QueryError(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
    }
  }

  #describeInstances(params: QueryParams): Record<string, XmlValue> {
    const ids = memberList(params, 'InstanceIds.member');
    const found = ids.flatMap((id) => {
      const instance = this.instances.get(id);
      return instance === undefined || instance.lifecycleState === 'Terminated' ? [] : [instance];
    });
    return {
      AutoScalingInstances: found.map((instance) => ({
        InstanceId: instance.instanceId,
        InstanceType: 'm5.large',
        AutoScalingGroupName: instance.groupName,
        AvailabilityZone: 'eu-west-1a',
        LifecycleState: instance.lifecycleState,
        HealthStatus: 'HEALTHY',
        ProtectedFromScaleIn: false,
      })),
    };
  }

  /** The instance whose action `params` name, refused as AWS refuses a wrong group, hook or instance. */
  #pendingAction(params: QueryParams): FakeAsgInstance {
    const groupName = params.get('AutoScalingGroupName') ?? '';
    const hookName = params.get('LifecycleHookName') ?? '';
    const instanceId = params.get('InstanceId') ?? '';
    const hooks = this.groups.get(groupName);
    if (hooks === undefined) throw new QueryError(400, 'ValidationError', `AutoScalingGroup name not found - no such group: ${groupName}`);
    if (!hooks.has(hookName)) throw new QueryError(400, 'ValidationError', `No Lifecycle Hook found for name: ${hookName} and group: ${groupName}`);
    const instance = this.instances.get(instanceId);
    if (instance?.groupName !== groupName || instance.lifecycleState !== 'Terminating:Wait' || instance.pendingHook !== hookName) {
      throw new QueryError(400, 'ValidationError', `No active Lifecycle Action found with instance ID ${instanceId}`);
    }
    return instance;
  }

  /** As scale-in does (a termination hook holds the instance in `Terminating:Wait`), and the desired capacity drops by one if asked. */
  #terminate(params: QueryParams): Record<string, XmlValue> {
    const instanceId = params.get('InstanceId') ?? '';
    const decrement = params.get('ShouldDecrementDesiredCapacity');
    if (decrement !== 'true' && decrement !== 'false') {
      throw new QueryError(400, 'ValidationError', "1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null");
    }
    const instance = this.instances.get(instanceId);
    if (instance === undefined || instance.lifecycleState !== 'InService') {
      throw new QueryError(400, 'ValidationError', `Instance Id not found - No managed instance found for instance ID: ${instanceId}`);
    }
    this.scaleIn(instanceId);
    if (decrement === 'true') this.desiredCapacity.set(instance.groupName, (this.desiredCapacity.get(instance.groupName) ?? 1) - 1);
    return {
      Activity: {
        ActivityId: randomUUID(),
        AutoScalingGroupName: instance.groupName,
        Description: `Terminating EC2 instance: ${instanceId}`,
        Cause: `At ${new Date().toISOString()} instance ${instanceId} was taken out of service in response to a user request${decrement === 'true' ? ', shrinking the capacity' : ''}.`,
        StartTime: new Date().toISOString(),
        StatusCode: 'InProgress',
        Progress: 0,
      },
    };
  }

  #complete(params: QueryParams): undefined {
    const result = params.get('LifecycleActionResult') ?? '';
    if (result !== 'CONTINUE' && result !== 'ABANDON') throw new QueryError(400, 'ValidationError', `Invalid LifecycleActionResult: ${result}`);
    const instance = this.#pendingAction(params);
    instance.result = result;
    delete instance.pendingHook;
    instance.lifecycleState = 'Terminating:Proceed';
    return undefined;
  }
}

/** `<ActionResponse><ActionResult>...</ActionResult><ResponseMetadata>` (no Result element for actions that return nothing). */
function responseXml(action: string, requestId: string, result: Record<string, XmlValue> | undefined): string {
  const inner = result === undefined ? '' : xml(`${action}Result`, result, 'member');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${AUTOSCALING_XMLNS}">${inner}<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`;
}

/** The Query services' error document; `Sender` for 4xx, `Receiver` for 5xx. */
function errorXml(failure: QueryError, requestId: string): string {
  const type = failure.status < 500 ? 'Sender' : 'Receiver';
  return `<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse xmlns="${AUTOSCALING_XMLNS}"><Error><Type>${type}</Type><Code>${escapeXml(failure.code)}</Code><Message>${escapeXml(failure.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`;
}
