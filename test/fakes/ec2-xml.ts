/**
 * The EC2 Query API's wire formats for the fake: reading the form-encoded
 * parameters the SDK sends (`InstanceId.1=...`, `Filter.1.Value.1=...`,
 * `TagSpecification.1.Tag.2.Key=...`) and writing EC2's XML answers
 * (API version 2016-11-15). What all Query services share is in aws-query.ts.
 */

import { escapeXml, memberIndexes, memberList, xml, type QueryParams, type XmlValue } from './aws-query.js';

export const EC2_XMLNS = 'http://ec2.amazonaws.com/doc/2016-11-15/';

export interface QueryFilter {
  name: string;
  values: string[];
}

export function filters(params: QueryParams): QueryFilter[] {
  return memberIndexes(params, 'Filter').map((i) => ({
    name: params.get(`Filter.${i}.Name`) ?? '',
    values: memberList(params, `Filter.${i}.Value`),
  }));
}

/** `TagSpecification.N` of one resource type, as a key -> value map. */
export function tagSpecification(params: QueryParams, resourceType: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const i of memberIndexes(params, 'TagSpecification')) {
    if (params.get(`TagSpecification.${i}.ResourceType`) !== resourceType) continue;
    for (const j of memberIndexes(params, `TagSpecification.${i}.Tag`)) {
      tags[params.get(`TagSpecification.${i}.Tag.${j}.Key`) ?? ''] = params.get(`TagSpecification.${i}.Tag.${j}.Value`) ?? '';
    }
  }
  return tags;
}

/** EC2 name filters: `*` any run of characters, `?` one character, the rest literal. */
export function wildcardMatch(pattern: string, value: string): boolean {
  const regex = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*').replaceAll('?', '.');
  return new RegExp(`^${regex}$`, 's').test(value);
}

/** A successful answer: `<ActionResponse xmlns=...><requestId/>...</ActionResponse>`. */
export function responseXml(action: string, requestId: string, body: Record<string, XmlValue>): string {
  const inner = Object.entries(body)
    .map(([tag, value]) => xml(tag, value))
    .join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${EC2_XMLNS}"><requestId>${requestId}</requestId>${inner}</${action}Response>`;
}

/** EC2's error document (note: `RequestID`, and no namespace). */
export function errorXml(code: string, message: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${escapeXml(code)}</Code><Message>${escapeXml(message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`;
}
