/**
 * The user data an instance boots with: the startup script (as travis'
 * ec2 backend sends one) that authorizes this job's public key for the build
 * user and, with AUTO_IMPLODE, schedules a power-off after the job's hard
 * limit (with InstanceInitiatedShutdownBehavior=terminate, a termination).
 * The operator's USER_DATA rides along: shell text is appended to the
 * script (travis' behaviour); a `#cloud-config` document is sent next to it
 * as a MIME multi-part archive, which cloud-init splits into its parts.
 */
import { startupScript } from '../../src/backend/kit.js';

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

/** The user data text (before base64). Throws an `Error` for USER_DATA it can't combine, or too large a result (found at load: `validateSettings`). */
export function buildUserData(options: UserDataOptions): string {
  const script = startupScript({
    user: options.user,
    publicKey: options.publicKey,
    ...(options.implodeAfterMinutes === undefined ? {} : { powerOffAfterMinutes: options.implodeAfterMinutes }),
  });
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
