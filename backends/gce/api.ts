/**
 * The Compute API calls the backend makes, each through `CloudApi` (rate
 * limit, retries with backoff on throttling/5xx, metrics), on the REST
 * transport of `@google-cloud/compute`. SDK-level retries are off so every
 * attempt is seen (and counted) by `CloudApi`. Every answer is checked
 * (answers.ts) before it is returned: one that is garbled or of the wrong
 * shape fails the call with a `MalformedAnswerError` saying what was wrong.
 */
import { randomUUID } from 'node:crypto';
import type { ImagesClient, InstancesClient, ZoneOperationsClient, protos } from '@google-cloud/compute';
import type { JWT } from 'google-auth-library';
import type { z } from 'zod';
import { CloudApi, checkAnswer, endpointOptions, type BackendMetrics, type Logger } from '../../src/backend/kit.js';
import { IMAGES, INSTANCE, OPERATION, unreadableAnswer } from './answers.js';
import { COMPUTE_SCOPE } from './auth.js';
import { classifyGceError } from './errors.js';

export type GceInstanceResource = protos.google.cloud.compute.v1.IInstance;
/** An operation as the API answered it, with the name and status every answer was checked to have. */
export type GceOperation = protos.google.cloud.compute.v1.IOperation & z.output<typeof OPERATION>;
export type GceImage = protos.google.cloud.compute.v1.IImage;

/** One HTTP request to the API; the SDK's own default is 10 minutes. */
const CALL_TIMEOUT_MS = 60_000;
/** What every call passes to the SDK: no SDK retries (CloudApi retries), a bounded wait. */
const CALL_OPTIONS = { timeout: CALL_TIMEOUT_MS, maxRetries: 0 };
/**
 * `zoneOperations.wait` holds the request until the operation is DONE or
 * about two minutes have passed (Compute API reference), so its call gets
 * that plus the usual bound.
 */
const WAIT_CALL_OPTIONS = { timeout: 2 * 60_000 + CALL_TIMEOUT_MS, maxRetries: 0 };

export interface GceApiOptions {
  /** e.g. `https://compute.googleapis.com` or `http://127.0.0.1:8080`. */
  endpoint: string;
  /** Makes the credentials on first use; undefined = application default credentials. */
  authClient: (() => Promise<JWT>) | undefined;
  maxCalls: number;
  intervalMs: number;
  metrics: BackendMetrics;
  logger: Logger;
}

/** What the SDK answered, or, when its transport could not read the answer, the `MalformedAnswerError` that says why. */
async function read<T>(answer: Promise<T>): Promise<T> {
  try {
    return await answer;
  } catch (err) {
    throw unreadableAnswer(err);
  }
}


type ClientOptions = NonNullable<ConstructorParameters<typeof InstancesClient>[0]>;

interface Clients {
  instances: InstancesClient;
  operations: ZoneOperationsClient;
  images: ImagesClient;
}

export class GceApi {
  /**
   * The SDK is loaded on first use, not at worker startup: it costs about a
   * second and tens of MB of heap (and makes heap snapshots slow), which
   * workers on other backends should not pay.
   */
  #clients: Promise<Clients> | undefined;
  readonly #clientOptions: ClientOptions;
  readonly #makeAuthClient: (() => Promise<JWT>) | undefined;
  readonly #cloud: CloudApi;

  constructor(options: GceApiOptions) {
    const clientOptions: ClientOptions = {
      ...endpointOptions(options.endpoint),
      fallback: true,
      scopes: [COMPUTE_SCOPE],
    };
    this.#clientOptions = clientOptions;
    this.#makeAuthClient = options.authClient;
    this.#cloud = new CloudApi({
      backend: 'gce',
      maxCalls: options.maxCalls,
      intervalMs: options.intervalMs,
      classify: classifyGceError,
      metrics: options.metrics,
      logger: options.logger,
    });
  }

  /**
   * Insert an instance; resolves with its insert operation. `onSent` gets
   * the SDK's promise of each attempt, so a caller that gives up can still
   * wait for a request already on the wire before deleting what it made.
   */
  insertInstance(
    project: string,
    zone: string,
    instance: GceInstanceResource,
    signal: AbortSignal,
    onSent: (attempt: Promise<unknown>) => void,
  ): Promise<GceOperation> {
    // One request id for every attempt: the API runs a retried insert (whose answer was lost) once, not twice.
    const requestId = randomUUID();
    return this.#cloud.call(
      'instances.insert',
      async () => {
        const { instances } = await this.#sdk();
        const attempt = instances.insert({ project, zone, requestId, instanceResource: instance }, CALL_OPTIONS);
        onSent(attempt);
        const [operation] = await read(attempt);
        return checkAnswer(OPERATION, operation.latestResponse as protos.google.cloud.compute.v1.IOperation, 'the insert operation');
      },
      signal,
    );
  }

  getInstance(project: string, zone: string, name: string, signal: AbortSignal): Promise<GceInstanceResource> {
    return this.#cloud.call(
      'instances.get',
      async () => {
        const { instances } = await this.#sdk();
        const [instance] = await read(instances.get({ project, zone, instance: name }, CALL_OPTIONS));
        return checkAnswer(INSTANCE, instance, `instance ${name}`);
      },
      signal,
    );
  }

  deleteInstance(project: string, zone: string, name: string, signal: AbortSignal): Promise<GceOperation> {
    // One request id for every attempt, as for inserts: a retry whose first answer was lost gets that delete's operation.
    const requestId = randomUUID();
    return this.#cloud.call(
      'instances.delete',
      async () => {
        const { instances } = await this.#sdk();
        const [operation] = await read(instances.delete({ project, zone, instance: name, requestId }, CALL_OPTIONS));
        return checkAnswer(OPERATION, operation.latestResponse as protos.google.cloud.compute.v1.IOperation, 'the delete operation');
      },
      signal,
    );
  }

  /** Instances of a zone matching a filter such as `labels.travis-job-id = "42"`. */
  listInstances(project: string, zone: string, filter: string, signal: AbortSignal): Promise<GceInstanceResource[]> {
    return this.#cloud.call(
      'instances.list',
      async () => {
        const { instances } = await this.#sdk();
        return (await read(instances.list({ project, zone, filter }, CALL_OPTIONS)))[0];
      },
      signal,
    );
  }

  /**
   * The operation once it is DONE, or as it stands when the API's own wait
   * (up to two minutes) ran out: the API answers as soon as it finishes,
   * where polling would notice up to a poll interval late.
   */
  waitOperation(project: string, zone: string, operation: string, signal: AbortSignal): Promise<GceOperation> {
    return this.#cloud.call(
      'zoneOperations.wait',
      async () => {
        const { operations } = await this.#sdk();
        const [answer] = await read(operations.wait({ project, zone, operation }, WAIT_CALL_OPTIONS));
        return checkAnswer(OPERATION, answer, `operation ${operation}`);
      },
      signal,
    );
  }

  /** Images of `project` matching a filter such as `name eq ^travis-ci.+`, every page. */
  listImages(project: string, filter: string, signal: AbortSignal): Promise<GceImage[]> {
    return this.#cloud.call(
      'images.list',
      async () => {
        const { images } = await this.#sdk();
        const [list] = await read(images.list({ project, filter }, CALL_OPTIONS));
        return checkAnswer(IMAGES, list, 'the image list');
      },
      signal,
    );
  }

  #sdk(): Promise<Clients> {
    this.#clients ??= (async () => {
      const [sdk, authClient] = await Promise.all([import('@google-cloud/compute'), this.#makeAuthClient?.()]);
      const options = { ...this.#clientOptions };
      // google-gax types its own copy of google-auth-library; at run time it only calls the client's fetch().
      if (authClient !== undefined) options.authClient = authClient as unknown as NonNullable<ClientOptions['authClient']>;
      return {
        instances: new sdk.InstancesClient(options),
        operations: new sdk.ZoneOperationsClient(options),
        images: new sdk.ImagesClient(options),
      };
    })();
    return this.#clients;
  }

  async close(): Promise<void> {
    if (this.#clients === undefined) return;
    const { instances, operations, images } = await this.#clients;
    await Promise.all([instances.close(), operations.close(), images.close()]);
  }
}
