/**
 * Per-job SSH keys: the cloud backends put the public key on the VM they
 * boot (metadata, user data) and log in with the private key, which never
 * leaves this process's memory.
 */
import ssh2 from 'ssh2';

/** An SSH key pair held in memory. */
export interface JobKeyPair {
  /** OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted. */
  privateKey: string;
  /** One `authorized_keys` line: `ssh-ed25519 AAAA... mayfly`. */
  publicKey: string;
}

/** An ed25519 public key blob: string "ssh-ed25519" (4 + 11 bytes) and string key (4 + 32 bytes). */
const ED25519_PUBLIC_BLOB_BYTES = 4 + 11 + 4 + 32;
/**
 * Key pairs generated before giving up. ssh2 1.17 drops a leading zero byte
 * of the ed25519 public key (and of the private seed) when it encodes a
 * fresh pair: about 1 pair in 200 has a 31-byte key that neither ssh2 nor
 * sshd accepts (measured: 93 of 20,000). Eight bad pairs in a row would
 * take odds of about 1e-18.
 */
const MAX_GENERATION_ATTEMPTS = 8;

/** A fresh ed25519 key pair for one job (ed25519: small, fast, accepted by every current sshd). */
export function generateJobKeyPair(): JobKeyPair {
  for (let attempt = 1; attempt <= MAX_GENERATION_ATTEMPTS; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'mayfly' });
    if (wellFormed(pair.private, pair.public)) return { privateKey: pair.private, publicKey: pair.public };
  }
  throw new Error(`ssh2 generated ${MAX_GENERATION_ATTEMPTS} malformed ed25519 key pairs in a row`);
}

/** The private key parses, holds a 32-byte public key, and the public line carries that same key. */
function wellFormed(privateKey: string, publicKey: string): boolean {
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error) return false;
  const blob = parsed.getPublicSSH();
  return blob.length === ED25519_PUBLIC_BLOB_BYTES && publicKey.split(' ')[1] === blob.toString('base64');
}
