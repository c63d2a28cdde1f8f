/**
 * The boot script of a cloud VM made for one job (GCE `startup-script`, EC2
 * user data): it authorizes the job's public key for the build user, as
 * travis-ci/worker's startup scripts do (its images may lack the guest agent
 * that would read `ssh-keys` metadata), and can schedule a power-off for
 * when the job can no longer be running, even if the worker is gone.
 *
 * Only the public key is here: the private key stays in the worker's memory.
 */

/** A login name the script can put in a path unquoted: what `useradd` accepts by default. */
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;

export interface StartupScriptOptions {
  /** The user the worker logs in as; checked with `checkUserName` at load. */
  user: string;
  /** One `authorized_keys` line. */
  publicKey: string;
  /** Power off this many minutes after boot; undefined = never. */
  powerOffAfterMinutes?: number;
}

/** Throws an `Error` saying why `user` can't be the build user (the loader names the setting). */
export function checkUserName(user: string): void {
  if (!USER_NAME.test(user)) throw new Error(`"${user}" is not a user name`);
}

export function startupScript({ user, publicKey, powerOffAfterMinutes }: StartupScriptOptions): string {
  const lines = [
    '#!/usr/bin/env bash',
    "# Written by mayfly: lets the worker log in with this job's SSH key (made for this job only).",
    `install -d -m 700 -o ${user} -g ${user} ~${user}/.ssh`,
    `cat >> ~${user}/.ssh/authorized_keys <<'MAYFLY_KEY'`,
    publicKey.trim(),
    'MAYFLY_KEY',
    `chown ${user}: ~${user}/.ssh/authorized_keys`,
    `chmod 600 ~${user}/.ssh/authorized_keys`,
  ];
  if (powerOffAfterMinutes !== undefined) {
    // `shutdown` schedules it with systemd; `at` is travis' way, for images without it.
    lines.push(
      `shutdown -P +${powerOffAfterMinutes} 'mayfly: the job hard limit has passed' || echo poweroff | at now + ${powerOffAfterMinutes} minutes`,
    );
  }
  return `${lines.join('\n')}\n`;
}
