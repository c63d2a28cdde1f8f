/**
 * The Terraform examples (deploy/gce-mig, deploy/aws-asg) can't be applied
 * here, so they are parsed (HashiCorp's HCL parser, @cdktf/hcl2json) and
 * checked: every TRAVIS_WORKER_* setting they give the hosts exists and
 * loads (strictly, as the worker would load it), every reference names a
 * variable, local, resource or file that is there, and the pieces that
 * make a fleet safe agree with each other (the health check on the control
 * API's /healthz, IMDSv2 required, the lifecycle hook the host completes,
 * the permissions the hosts need, the autoscaler's target in job slots).
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from '@cdktf/hcl2json';
import { parse as parseYaml } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { backends } from '../../backends/index.js';
import { loadConfig } from '../../src/config/load.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** What an operator passes for the variables that have no default (`terraform apply -var ...`). */
const OPERATOR_INPUT: Record<string, Record<string, string>> = {
  'deploy/gce-mig': { project: 'mayfly-ci', amqp_uri_secret: 'mayfly-amqp-uri' },
  'deploy/aws-asg': { amqp_uri_parameter: '/mayfly/amqp-uri' },
};

type Block = Record<string, unknown>;

/** One Terraform module, as hcl2json gives it (every block a list), merged over its .tf files. */
interface Module {
  dir: string;
  variables: Map<string, unknown>;
  locals: Block;
  /** `type.name` -> the block. */
  resources: Map<string, Block>;
  data: Set<string>;
  /** Every string in the module, for the reference checks. */
  strings: string[];
}

async function loadModule(dir: string): Promise<Module> {
  const module: Module = { dir: join(ROOT, dir), variables: new Map(), locals: {}, resources: new Map(), data: new Set(), strings: [] };
  for (const file of (await readdir(module.dir)).filter((name) => name.endsWith('.tf'))) {
    const parsed = (await parse(file, await readFile(join(module.dir, file), 'utf8'))) as {
      variable?: Record<string, Block[]>;
      locals?: Block[];
      resource?: Record<string, Record<string, Block[]>>;
      data?: Record<string, Record<string, Block[]>>;
    };
    for (const [name, [block]] of Object.entries(parsed.variable ?? {})) module.variables.set(name, OPERATOR_INPUT[dir]?.[name] ?? block?.['default']);
    for (const block of parsed.locals ?? []) Object.assign(module.locals, block);
    for (const [type, byName] of Object.entries(parsed.resource ?? {})) {
      for (const [name, [block]] of Object.entries(byName)) module.resources.set(`${type}.${name}`, block ?? {});
    }
    for (const [type, byName] of Object.entries(parsed.data ?? {})) for (const name of Object.keys(byName)) module.data.add(`${type}.${name}`);
    collectStrings(parsed, module.strings);
  }
  return module;
}

function collectStrings(value: unknown, into: string[]): void {
  if (typeof value === 'string') into.push(value);
  else if (Array.isArray(value)) for (const item of value) collectStrings(item, into);
  else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      into.push(key);
      collectStrings(item, into);
    }
  }
}

/** The only block of `key` in `block` (hcl2json makes each nested block a list). */
function only(block: Block | undefined, key: string): Block {
  const list = block?.[key];
  if (!Array.isArray(list) || list.length !== 1) throw new Error(`expected one ${key} block`);
  return list[0] as Block;
}

function resource(module: Module, address: string): Block {
  const block = module.resources.get(address);
  if (!block) throw new Error(`${module.dir}: no resource ${address}`);
  return block;
}

/** A setting's value with `${var.x}` (its default) and `${local.x}` filled in; what can't be filled in stays. */
function resolve(module: Module, value: unknown): string {
  return String(value).replace(/\$\{(var|local)\.([\w-]+)\}/g, (whole, kind: string, name: string) => {
    const found = kind === 'var' ? module.variables.get(name) : module.locals[name];
    return found === undefined || typeof found === 'object' ? whole : String(found);
  });
}

/** What the references in a module's strings name and it lacks. */
function danglingReferences(module: Module): string[] {
  const missing = new Set<string>();
  for (const text of module.strings.filter((s) => s.includes('${'))) {
    for (const [, name] of text.matchAll(/\bvar\.([\w-]+)/g)) if (!module.variables.has(name as string)) missing.add(`var.${name}`);
    for (const [, name] of text.matchAll(/\blocal\.([\w-]+)/g)) if (!(name as string in module.locals)) missing.add(`local.${name}`);
    for (const [, address] of text.matchAll(/\bdata\.([a-z0-9_]+\.[\w-]+)/g)) if (!module.data.has(address as string)) missing.add(`data.${address}`);
    for (const [address] of text.matchAll(/(?<![\w.])(?:google|aws)_[a-z0-9_]+\.[\w-]+/g)) if (!module.resources.has(address)) missing.add(address);
    for (const [, path] of text.matchAll(/\$\{path\.module\}\/([^"'),]+)/g)) if (!existsSync(join(module.dir, path as string))) missing.add(`file ${path}`);
  }
  return [...missing];
}

/** The hosts' settings: `local.mayfly_settings`, resolved. */
function settingsOf(module: Module): Record<string, string> {
  const settings = module.locals['mayfly_settings'] as Record<string, unknown>;
  return Object.fromEntries(Object.entries(settings).map(([name, value]) => [name, resolve(module, value)]));
}

describe.each([
  ['deploy/gce-mig', 'gce'],
  ['deploy/aws-asg', 'ec2'],
])('%s', (dir, provider) => {
  let module: Module;
  beforeAll(async () => {
    module = await loadModule(dir);
  });

  it('refers only to variables, locals, resources and files that exist', () => {
    expect(module.resources.size).toBeGreaterThan(5);
    expect(danglingReferences(module)).toEqual([]);
  });

  it('sets only mayfly settings that exist, with values the worker loads (strictly: an unknown TRAVIS_WORKER_* stops it)', () => {
    const settings = settingsOf(module);
    expect(Object.values(settings).filter((value) => value.includes('${'))).toEqual([]);
    expect(Object.keys(settings).every((name) => name.startsWith('TRAVIS_WORKER_'))).toBe(true);
    const config = loadConfig(backends, { ...settings, TRAVIS_WORKER_STRICT_CONFIG: 'true' });
    expect(config.providerName).toBe(provider);
    expect(config.queueType).toBe('amqp');
    expect(config.lifetime.hostTerminate).toBe(true);
    expect(config.lifetime.idleShutdownAfterMs).toBeGreaterThan(0);
    expect(config.host.cloud).toBe(provider === 'gce' ? 'gce' : 'aws');
  });

  it('boots mayfly with cloud-init: the settings into /etc/default/mayfly, the repository\'s systemd unit', async () => {
    const template = await readFile(join(module.dir, 'cloud-init.yaml.tftpl'), 'utf8');
    expect(template.startsWith('#cloud-config\n')).toBe(true);
    expect(template).toContain('path: /etc/default/mayfly');
    expect(template).toMatch(/%\{ for name, value in settings ~\}\n\s+\$\{name\}=\$\{value\}/);
    expect(template).toContain('[systemctl, enable, --now, mayfly]');
    // Restarted only after a failure: a host whose lifetime ended (exit 0) stays stopped while it leaves its group.
    expect(template).toMatch(/mayfly\.service\.d\/fleet\.conf\n\s+content: \|\n\s+\[Service\]\n\s+Restart=on-failure\n/);
    const calls = module.strings.filter((text) => text.includes('templatefile('));
    expect(calls.some((text) => text.includes('cloud-init.yaml.tftpl') && text.includes('settings') && text.includes('local.mayfly_settings') && text.includes('../../systemd/mayfly.service'))).toBe(true);
  });
});

describe('deploy/gce-mig in detail', () => {
  let module: Module;
  beforeAll(async () => {
    module = await loadModule('deploy/gce-mig');
  });

  it("runs the hosts as its own service account, holding the backend's role and the right to leave the group", async () => {
    const template = resource(module, 'google_compute_instance_template.mayfly');
    expect(only(template, 'service_account')['email']).toBe('${google_service_account.mayfly.email}');
    expect(resource(module, 'google_project_iam_custom_role.mayfly_worker')['permissions']).toBe('${yamldecode(file("${path.module}/../gce/mayfly-role.yaml")).includedPermissions}');
    expect(resource(module, 'google_project_iam_custom_role.mayfly_leave_group')['permissions']).toEqual(['compute.instanceGroupManagers.update']);
    const role = parseYaml(await readFile(join(ROOT, 'deploy/gce/mayfly-role.yaml'), 'utf8')) as { includedPermissions: string[] };
    expect(role.includedPermissions).toContain('compute.instances.create');
    const grants = resource(module, 'google_project_iam_member.mayfly');
    expect(grants['member']).toBe('serviceAccount:${google_service_account.mayfly.email}');
    expect(grants['role']).toBe('${each.value}');
    expect(grants['for_each']).toMatchObject({ worker: '${google_project_iam_custom_role.mayfly_worker.id}', leave_group: '${google_project_iam_custom_role.mayfly_leave_group.id}' });
  });

  it("heals on the control API's /healthz, on the port the hosts serve it", () => {
    const check = only(resource(module, 'google_compute_health_check.mayfly'), 'http_health_check');
    expect(check['request_path']).toBe('/healthz');
    const port = resolve(module, check['port']);
    expect(resolve(module, settingsOf(module)['TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR'])).toBe(`0.0.0.0:${port}`);
    const group = resource(module, 'google_compute_instance_group_manager.mayfly');
    expect(only(group, 'auto_healing_policies')['health_check']).toBe('${google_compute_health_check.mayfly.id}');
    expect(only(group, 'version')['instance_template']).toBe('${google_compute_instance_template.mayfly.id}');
  });

  it('scales out on the per-group demand in job slots, from zero, and leaves scale-in to the hosts themselves', () => {
    const autoscaler = resource(module, 'google_compute_autoscaler.mayfly');
    expect(autoscaler['target']).toBe('${google_compute_instance_group_manager.mayfly.id}');
    const policy = only(autoscaler, 'autoscaling_policy');
    expect(policy['min_replicas']).toBe(0);
    expect(policy['mode']).toBe('ONLY_SCALE_OUT');
    const metric = only(policy, 'metric');
    // One host absorbs POOL_SIZE jobs: the same expression.
    expect(metric['single_instance_assignment']).toBe((module.locals['mayfly_settings'] as Block)['TRAVIS_WORKER_POOL_SIZE']);
    expect(String(metric['filter'])).not.toContain('gce_instance');
  });
});

describe('deploy/aws-asg in detail', () => {
  let module: Module;
  beforeAll(async () => {
    module = await loadModule('deploy/aws-asg');
  });

  it('requires IMDSv2 and mixes on-demand and spot hosts', () => {
    const template = resource(module, 'aws_launch_template.mayfly');
    expect(only(template, 'metadata_options')).toMatchObject({ http_endpoint: 'enabled', http_tokens: 'required' });
    expect(only(template, 'iam_instance_profile')['arn']).toBe('${aws_iam_instance_profile.mayfly.arn}');
    const policy = only(resource(module, 'aws_autoscaling_group.mayfly'), 'mixed_instances_policy');
    const distribution = only(policy, 'instances_distribution');
    expect(Number(distribution['on_demand_percentage_above_base_capacity'])).toBeLessThan(100);
    expect(only(only(policy, 'launch_template'), 'launch_template_specification')['launch_template_id']).toBe('${aws_launch_template.mayfly.id}');
  });

  it('has the termination lifecycle hook the hosts complete, by the name they are given', () => {
    const hook = only(resource(module, 'aws_autoscaling_group.mayfly'), 'initial_lifecycle_hook');
    expect(hook['lifecycle_transition']).toBe('autoscaling:EC2_INSTANCE_TERMINATING');
    expect(resolve(module, hook['name'])).toBe(settingsOf(module)['TRAVIS_WORKER_ASG_LIFECYCLE_HOOK']);
  });

  it("gives the hosts the backend's policy and the Auto Scaling actions of the fleet, on their own group", () => {
    expect(resource(module, 'aws_iam_role_policy.worker')['policy']).toBe('${file("${path.module}/../aws/mayfly-policy.json")}');
    const fleet = String(resource(module, 'aws_iam_role_policy.fleet')['policy']);
    for (const action of ['DescribeAutoScalingInstances', 'RecordLifecycleActionHeartbeat', 'CompleteLifecycleAction', 'TerminateInstanceInAutoScalingGroup']) {
      expect(fleet).toContain(`"autoscaling:${action}"`);
    }
    expect(fleet).toContain('autoScalingGroupName/${local.group_name}');
    expect(resource(module, 'aws_autoscaling_group.mayfly')['name']).toBe('${local.group_name}');
    expect(resource(module, 'aws_iam_instance_profile.mayfly')['role']).toBe('${aws_iam_role.mayfly.name}');
  });

  it('tracks (ready + running jobs) per host at one host\'s slots', () => {
    const tracking = only(resource(module, 'aws_autoscaling_policy.demand'), 'target_tracking_configuration');
    expect(tracking['target_value']).toBe((module.locals['mayfly_settings'] as Block)['TRAVIS_WORKER_POOL_SIZE']);
    const metrics = only(tracking, 'customized_metric_specification')['metrics'] as Block[];
    const names = metrics.flatMap((metric) => (metric['metric_stat'] ? [String(only(only(metric, 'metric_stat'), 'metric')['metric_name'])] : []));
    expect(names).toEqual(['mayfly_queue_ready_jobs', 'mayfly_processors', 'GroupInServiceInstances']);
    expect(metrics.filter((metric) => metric['return_data'] === true).map((metric) => metric['expression'])).toEqual(['(ready + running) / MAX([hosts, 1])']);
  });
});
