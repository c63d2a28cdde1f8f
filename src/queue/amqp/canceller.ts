/**
 * Cancel commands from the `worker.commands` fanout exchange (docs/protocol.md,
 * "Cancel commands"): each worker binds its own server-named exclusive queue.
 * A bad command is logged with the offending field and dropped; nothing a
 * command (or a listener) does can take the worker down.
 */
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { z } from 'zod';
import { errorMessage } from '../../errors.js';
import { truncateUtf8 } from '../../job-log/utf8.js';
import type { Logger } from '../../logger.js';
import type { CancelCommand } from '../contract.js';
import { COMMANDS_EXCHANGE } from './messages.js';
import { closeChannel } from './close-channel.js';

/**
 * Longest reason or source kept, in bytes of UTF-8; longer ones are cut and
 * marked. travis' hub sends a short sentence; the bound keeps a flood of
 * commands with huge texts from being remembered (CANCEL_MEMORY_MS), logged
 * or written to a job log whole.
 */
export const MAX_CANCEL_TEXT_BYTES = 1024;
const CUT_MARK = '…';

const jobId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
/** A reason or source, cut to MAX_CANCEL_TEXT_BYTES (the mark included). */
const boundedText = z
  .string()
  .nullish()
  .transform((text) => {
    const value = text ?? '';
    if (Buffer.byteLength(value, 'utf8') <= MAX_CANCEL_TEXT_BYTES) return value;
    return `${truncateUtf8(value, MAX_CANCEL_TEXT_BYTES - Buffer.byteLength(CUT_MARK, 'utf8'))}${CUT_MARK}`;
  });

const cancelCommandSchema = z.object({
  type: z.literal('cancel_job'),
  // Producers in other languages send ids as strings; a decimal string is accepted.
  job_id: z.union([jobId, z.string().regex(/^\d+$/, 'must be a positive integer').transform(Number).pipe(jobId)]),
  reason: boundedText,
  source: boundedText,
});

export type ParsedCommand = { ok: true; command: CancelCommand } | { ok: false; field: string; problem: string };

export function parseCancelCommand(body: Uint8Array): ParsedCommand {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch (err) {
    return { ok: false, field: '(body)', problem: `not JSON: ${errorMessage(err)}` };
  }
  const parsed = cancelCommandSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      ok: false,
      field: issue && issue.path.length > 0 ? issue.path.join('.') : '(body)',
      problem: issue?.message ?? 'invalid',
    };
  }
  return {
    ok: true,
    command: { jobId: parsed.data.job_id, reason: parsed.data.reason, source: parsed.data.source },
  };
}

export interface CommandConsumerOptions {
  connection: ChannelModel;
  logger: Logger;
  /** Called with each valid command; a throwing listener is logged and skipped. */
  dispatch: (command: CancelCommand) => void;
}

/** Declare, bind and consume; returns the channel (close it to stop). */
export async function consumeCommands(options: CommandConsumerOptions): Promise<Channel> {
  const { logger } = options;
  const channel = await options.connection.createChannel();
  channel.on('error', (err: Error) => logger.error({ err: err.message }, 'cancel command channel error'));
  try {
    await channel.prefetch(1);
    await channel.assertExchange(COMMANDS_EXCHANGE, 'fanout', { durable: false, autoDelete: false, internal: false });
    // Server-named and exclusive: it lives and dies with this connection, so durability would mean nothing.
    const { queue } = await channel.assertQueue('', { exclusive: true, durable: false, autoDelete: false });
    await channel.bindQueue(queue, COMMANDS_EXCHANGE, '');
    await channel.consume(queue, (message) => handle(channel, message, options), { noAck: false, exclusive: true });
    logger.debug({ queue }, 'consuming cancel commands');
  } catch (err) {
    await closeChannel(channel, logger, 'commands');
    throw err;
  }
  return channel;
}

function handle(channel: Channel, message: ConsumeMessage | null, options: CommandConsumerOptions): void {
  const { logger } = options;
  if (message === null) {
    logger.error('the broker cancelled the cancel-command consumer; cancel commands are not received until restart');
    return;
  }
  try {
    const parsed = parseCancelCommand(message.content);
    if (!parsed.ok) {
      logger.error({ field: parsed.field, problem: parsed.problem, bytes: message.content.byteLength }, `dropped an invalid worker command: ${parsed.field}: ${parsed.problem}`);
    } else {
      options.dispatch(parsed.command);
    }
  } catch (err) {
    logger.error({ err: errorMessage(err) }, 'handling a worker command failed');
  }
  try {
    channel.ack(message);
  } catch (err) {
    logger.warn({ err: errorMessage(err) }, 'could not acknowledge a worker command');
  }
}
