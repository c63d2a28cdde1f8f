/** Per-job key pairs (src/ssh/keys.ts): every one must be usable, not 199 in 200. */
import ssh2 from 'ssh2';
import { expect, it } from 'vitest';
import { generateJobKeyPair } from '../../src/ssh/keys.js';

it('generates key pairs whose private key parses and whose public line is the same 32-byte ed25519 key', () => {
  // ssh2 alone gets about 1 pair in 200 wrong (a leading zero byte dropped): 2,000 pairs would all but surely hit one.
  for (let i = 0; i < 2_000; i++) {
    const pair = generateJobKeyPair();
    const parsed = ssh2.utils.parseKey(pair.privateKey);
    if (parsed instanceof Error) throw new Error(`pair ${i}: ${parsed.message}`);
    const [type, key, comment] = pair.publicKey.split(' ');
    expect([type, comment]).toEqual(['ssh-ed25519', 'mayfly']);
    const blob = parsed.getPublicSSH();
    expect(key).toBe(blob.toString('base64'));
    expect(blob.readUInt32BE(4 + 11)).toBe(32);
  }
});
