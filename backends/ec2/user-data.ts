/**
 * The user data an instance boots with: a shell script (as travis'
 * ec2 backend sends) that authorizes this job's public key for the build
 * user and, with AUTO_IMPLODE, schedules a power-off after the job's hard
 * limit. The operator's USER_DATA rides along: shell text is appended to the
 * script (travis' behaviour); a `#cloud-config` document is sent next to it
 * as a MIME multi-part archive, which cloud-init splits into its parts.
 *
 * Only the public key is here: the private key stays in the worker's memory.
 */
export interface UserDataOptions {
  /** One `authorized_keys` line. */
  publicKey: string;
  /** Validated user name (see `validateSettings`). */
  user: string;
  /** Power off after this many minutes; undefined = never. */
  implodeAfterMinutes?: number;
  /** The operator's USER_DATA, decoded; empty = none. */
  extra: string;
}

/** A boundary no key, script or YAML of ours contains. */
const BOUNDARY = 'MAYFLY-USER-DATA-BOUNDARY';
/** EC2 refuses user data larger than 16 KiB (before base64). */
export const USER_DATA_MAX_BYTES = 16 * 1024;

function keyScript({ publicKey, user, implodeAfterMinutes }: UserDataOptions): string {
  const lines = [
    '#!/usr/bin/env bash',
    '# Written by mayfly: lets the worker log in with this job\'s SSH key (made for this job only).',
    `install -d -m 700 -o ${user} -g ${user} ~${user}/.ssh`,
    `cat >> ~${user}/.ssh/authorized_keys <<'MAYFLY_KEY'`,
    publicKey.trim(),
    'MAYFLY_KEY',
    `chown ${user}: ~${user}/.ssh/authorized_keys`,
    `chmod 600 ~${user}/.ssh/authorized_keys`,
  ];
  if (implodeAfterMinutes !== undefined) {
    // With InstanceInitiatedShutdownBehavior=terminate a power-off is a termination.
    lines.push(`shutdown -h +${implodeAfterMinutes} 'mayfly: the job hard limit has passed' || true`);
  }
  return `${lines.join('\n')}\n`;
}

/** The user data text (before base64). Throws an `Error` for USER_DATA it can't combine, or too large a result (found at load: `validateSettings`). */
export function buildUserData(options: UserDataOptions): string {
  const script = keyScript(options);
  const extra = options.extra;
  let text: string;
  if (extra.trim() === '') {
    text = script;
  } else if (extra.startsWith('#cloud-config')) {
    text = [
      'Content-Type: multipart/mixed; boundary="' + BOUNDARY + '"',
      'MIME-Version: 1.0',
      '',
      `--${BOUNDARY}`,
      'Content-Type: text/x-shellscript; charset="utf-8"',
      'Content-Disposition: attachment; filename="mayfly-ssh-key.sh"',
      '',
      script,
      `--${BOUNDARY}`,
      'Content-Type: text/cloud-config; charset="utf-8"',
      'Content-Disposition: attachment; filename="operator.cfg"',
      '',
      extra.endsWith('\n') ? extra : `${extra}\n`,
      `--${BOUNDARY}--`,
      '',
    ].join('\n');
  } else if (/^content-type:/i.test(extra)) {
    throw new Error('a MIME multi-part archive cannot be combined; give shell text or #cloud-config');
  } else {
    text = `${script}\n${extra.endsWith('\n') ? extra : `${extra}\n`}`;
  }
  if (Buffer.byteLength(text) > USER_DATA_MAX_BYTES) {
    throw new Error(`would exceed EC2's ${USER_DATA_MAX_BYTES} bytes`);
  }
  return text;
}
