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

/** A fresh ed25519 key pair for one job (ed25519: small, fast, accepted by every current sshd). */
export function generateJobKeyPair(): JobKeyPair {
  const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'mayfly' });
  return { privateKey: pair.private, publicKey: pair.public };
}
