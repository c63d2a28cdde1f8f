/**
 * What every fake AWS Query API (EC2, Auto Scaling) shares: reading the
 * form-encoded parameters the SDK POSTs (`Action=...&Version=...&InstanceIds.member.1=...`),
 * checking that the request is SigV4-signed with the fake's access key, the
 * error a handler throws, and writing XML elements. Each service's answer
 * and error documents differ (EC2's `<Response><Errors>`, the other Query
 * services' `<ErrorResponse>`), so those stay with each fake.
 */
import type { IncomingMessage } from 'node:http';

/** Query parameters as the SDK flattened them. */
export type QueryParams = ReadonlyMap<string, string>;

/** A refusal as the service answers it: HTTP status, error code, message. */
export class QueryError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The request's form-encoded body as parameters. */
export async function readQueryParams(request: IncomingMessage): Promise<QueryParams> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return new Map(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
}

/** Whether the request is SigV4-signed with `accessKeyId` (the fakes check who signed, not the signature). */
export function signedBy(request: IncomingMessage, accessKeyId: string): boolean {
  const authorization = request.headers.authorization ?? '';
  return authorization.startsWith('AWS4-HMAC-SHA256 ') && authorization.includes(`Credential=${accessKeyId}/`);
}

/** `Prefix.1`, `Prefix.2`, ... until one is missing. */
export function memberList(params: QueryParams, prefix: string): string[] {
  const values: string[] = [];
  for (let i = 1; params.has(`${prefix}.${i}`); i++) values.push(params.get(`${prefix}.${i}`) as string);
  return values;
}

/** The indexes N for which some `Prefix.N.*` parameter exists, in order. */
export function memberIndexes(params: QueryParams, prefix: string): number[] {
  const indexes = new Set<number>();
  const pattern = new RegExp(`^${prefix.replaceAll('.', '\\.')}\\.(\\d+)\\.`);
  for (const key of params.keys()) {
    const match = pattern.exec(key);
    if (match) indexes.add(Number(match[1]));
  }
  return [...indexes].sort((a, b) => a - b);
}

export function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&${{ '<': 'lt', '>': 'gt', '&': 'amp', "'": 'apos', '"': 'quot' }[c] as string};`);
}

/** An XML element; `undefined` children are left out, strings are escaped, arrays become list items. */
export type XmlValue = string | number | boolean | undefined | XmlValue[] | { [tag: string]: XmlValue };

/** `value` as the element `tag`; list entries are `<itemTag>`s (EC2 says `item`, the other Query services `member`). */
export function xml(tag: string, value: XmlValue, itemTag = 'item'): string {
  if (value === undefined) return '';
  if (Array.isArray(value)) return `<${tag}>${value.map((item) => xml(itemTag, item, itemTag)).join('')}</${tag}>`;
  if (typeof value === 'object') {
    const inner = Object.entries(value)
      .map(([child, childValue]) => xml(child, childValue, itemTag))
      .join('');
    return `<${tag}>${inner}</${tag}>`;
  }
  return `<${tag}>${escapeXml(String(value))}</${tag}>`;
}
