/**
 * The kinds of malformed 200 answers both fake clouds can give (`inject` on
 * FakeGce, `failNext` on FakeEc2); each fake says what it makes of them.
 */
export type MalformedAnswer =
  | 'malformed-html'
  | 'malformed-truncated'
  | 'malformed-empty'
  | 'malformed-shape'
  | 'malformed-state'
  | 'malformed-address';

export const isMalformed = (fault: string): fault is MalformedAnswer => fault.startsWith('malformed-');
