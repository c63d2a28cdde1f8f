/**
 * The four EC2 calls the backend makes, each through `CloudApi` (rate
 * limit, retries with backoff, metrics) with the SDK's own retries off, so
 * one place decides when to try again and every attempt is counted. Every
 * answer is checked (answers.ts) before it is returned: one that is garbled
 * or of the wrong shape fails the call with a `MalformedAnswerError`
 * saying what was wrong.
 */
import type {
  DescribeImagesRequest,
  EC2Client,
  Filter,
  Image,
  Instance as Ec2InstanceDescription,
  InstanceStateChange,
  RunInstancesRequest,
} from '@aws-sdk/client-ec2';
import type { z } from 'zod';
import { CloudApi, checkAnswer, type BackendContext } from '../../src/backend/kit.js';
import { DESCRIBE_IMAGES, DESCRIBE_INSTANCES, RUN_INSTANCES, TERMINATE_INSTANCES, checkRawAnswer, unreadableAnswer } from './answers.js';
import { classifyEc2Error } from './classify.js';
import type { Ec2Settings } from './settings.js';

/**
 * One HTTP request to EC2 may take this long before it counts as a transient
 * failure and is retried; the SDK has no default timeout, and a call that
 * hangs would otherwise hold a job (or a termination) forever.
 */
export const API_CALL_TIMEOUT_MS = 30_000;

export type { Ec2InstanceDescription };

type Sdk = typeof import('@aws-sdk/client-ec2');

/** Results per DescribeInstances page: EC2's largest (API reference: MaxResults 5-1000, and never with InstanceIds). */
const DESCRIBE_PAGE_SIZE = 1000;

export class Ec2Api {
  readonly #settings: Ec2Settings;
  readonly #cloud: CloudApi;
  #sdk: Promise<{ sdk: Sdk; client: EC2Client }> | undefined;

  constructor(settings: Ec2Settings, context: BackendContext) {
    this.#settings = settings;
    this.#cloud = new CloudApi({
      backend: 'ec2',
      maxCalls: settings.rateLimitMaxCalls,
      intervalMs: settings.rateLimitDuration,
      classify: classifyEc2Error,
      metrics: context.metrics,
      logger: context.logger,
    });
  }

  /**
   * The SDK and a client, loaded on first use: the EC2 SDK takes about a
   * second and 40 MB of heap to load, which a worker on another backend
   * (every backend is registered in the same binary) should not pay.
   */
  #load(): Promise<{ sdk: Sdk; client: EC2Client }> {
    const settings = this.#settings;
    this.#sdk ??= import('@aws-sdk/client-ec2').then((sdk) => {
      const client = new sdk.EC2Client({
        region: settings.region,
        // CloudApi retries (with jitter, counted); the SDK must not retry underneath it.
        maxAttempts: 1,
        ...(settings.endpoint === '' ? {} : { endpoint: settings.endpoint }),
        ...(settings.awsAccessKeyId === ''
          ? {}
          : { credentials: { accessKeyId: settings.awsAccessKeyId, secretAccessKey: settings.awsSecretAccessKey } }),
      });
      // Low priority in the deserialize step: between the HTTP handler and the SDK's parser, so it sees the raw body.
      client.middlewareStack.add((next, context) => async (args) => checkRawAnswer(await next(args), String(context.commandName).replace(/Command$/, '')), {
        step: 'deserialize',
        priority: 'low',
        name: 'mayflyRawAnswerCheck',
      });
      return { sdk, client };
    });
    return this.#sdk;
  }

  /**
   * One call through `CloudApi`: `send` gets the signal for its HTTP
   * request (the attempt's, bounded by `API_CALL_TIMEOUT_MS`), and its
   * answer must fit `schema`.
   */
  #call<T, S extends z.ZodType>(
    action: string,
    send: (signal: AbortSignal) => Promise<T>,
    schema: S,
    what: string,
    signal: AbortSignal,
  ): Promise<T & z.output<S>> {
    return this.#cloud.call(
      action,
      async (attempt) => {
        let answer: T;
        try {
          answer = await send(AbortSignal.any([attempt, AbortSignal.timeout(API_CALL_TIMEOUT_MS)]));
        } catch (err) {
          throw unreadableAnswer(err);
        }
        return checkAnswer(schema, answer, what);
      },
      signal,
    );
  }

  /**
   * Launch one instance. `onSent` is called each time a request is handed to
   * the SDK: from then on an instance may exist even if no answer comes.
   */
  async runInstances(request: RunInstancesRequest, signal: AbortSignal, onSent: () => void = () => {}): Promise<Ec2InstanceDescription> {
    const { sdk, client } = await this.#load();
    const output = await this.#call(
      'RunInstances',
      (requestSignal) => {
        onSent();
        return client.send(new sdk.RunInstancesCommand(request), { abortSignal: requestSignal });
      },
      RUN_INSTANCES,
      'the RunInstances answer',
      signal,
    );
    // RUN_INSTANCES checked there is one.
    return output.Instances[0] as Ec2InstanceDescription;
  }

  /**
   * The instances with these ids and/or matching these filters (every page).
   * A filtered search asks for pages: without MaxResults EC2 answers the
   * whole region at once, which it advises against.
   */
  async describeInstances(input: { ids?: string[]; filters?: Filter[] }, signal: AbortSignal): Promise<Ec2InstanceDescription[]> {
    const { sdk, client } = await this.#load();
    const found: Ec2InstanceDescription[] = [];
    let nextToken: string | undefined;
    do {
      const token = nextToken;
      const output = await this.#call(
        'DescribeInstances',
        (requestSignal) =>
          client.send(
            new sdk.DescribeInstancesCommand({
              ...(input.ids ? { InstanceIds: input.ids } : {}),
              ...(input.filters ? { Filters: input.filters } : {}),
              ...(input.ids ? {} : { MaxResults: DESCRIBE_PAGE_SIZE }),
              ...(token === undefined ? {} : { NextToken: token }),
            }),
            { abortSignal: requestSignal },
          ),
        DESCRIBE_INSTANCES,
        'the DescribeInstances answer',
        signal,
      );
      for (const reservation of output.Reservations) found.push(...(reservation.Instances ?? []));
      nextToken = output.NextToken === '' ? undefined : output.NextToken;
    } while (nextToken !== undefined);
    return found;
  }

  async terminateInstances(ids: string[], signal: AbortSignal): Promise<InstanceStateChange[]> {
    const { sdk, client } = await this.#load();
    const output = await this.#call(
      'TerminateInstances',
      (requestSignal) => client.send(new sdk.TerminateInstancesCommand({ InstanceIds: ids }), { abortSignal: requestSignal }),
      TERMINATE_INSTANCES,
      'the TerminateInstances answer',
      signal,
    );
    return output.TerminatingInstances;
  }

  async describeImages(input: DescribeImagesRequest, signal: AbortSignal): Promise<Image[]> {
    const { sdk, client } = await this.#load();
    const output = await this.#call(
      'DescribeImages',
      (requestSignal) => client.send(new sdk.DescribeImagesCommand(input), { abortSignal: requestSignal }),
      DESCRIBE_IMAGES,
      'the DescribeImages answer',
      signal,
    );
    return output.Images;
  }

  async close(): Promise<void> {
    const loaded = await this.#sdk?.catch(() => undefined);
    loaded?.client.destroy();
  }
}
