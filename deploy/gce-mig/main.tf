# mayfly hosts in a GCE managed instance group (docs/fleet.md, "Running in a
# GCE managed instance group"). Each host runs mayfly under systemd (booted by
# cloud-init, cloud-init.yaml.tftpl) with the gce backend: its job VMs are made
# in the same project by the host's service account.
#
# The group grows on demand and never shrinks on its own (ONLY_SCALE_OUT): GCE
# gives a VM it deletes on scale-in no time to finish its jobs, so hosts leave
# by themselves once idle (IDLE_SHUTDOWN_AFTER + HOST_TERMINATE:
# instanceGroupManagers.deleteInstances, which also lowers the target size).
#
#   terraform init && terraform apply -var project=my-project -var amqp_uri_secret=mayfly-amqp-uri
#
# test/integration/deploy-terraform.test.ts parses this file and checks every
# mayfly setting it sets against the worker's own settings.

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

variable "project" {
  type        = string
  description = "Project of the hosts and their job VMs."
}

variable "zone" {
  type    = string
  default = "us-central1-b"
}

variable "queue_name" {
  type        = string
  default     = "builds.gce"
  description = "The RabbitMQ queue the hosts take jobs from."
}

variable "slots_per_host" {
  type        = number
  default     = 4
  description = "Jobs one host runs at once (TRAVIS_WORKER_POOL_SIZE): the demand one host absorbs."
}

variable "max_hosts" {
  type    = number
  default = 20
}

variable "amqp_uri_secret" {
  type        = string
  description = "Secret Manager secret holding TRAVIS_WORKER_AMQP_URI (it carries the broker's password, so it stays out of instance metadata)."
}

variable "host_image" {
  type        = string
  default     = "projects/debian-cloud/global/images/family/debian-12"
  description = "Boot image of the hosts; cloud-init installs Node.js and mayfly on first boot."
}

variable "mayfly_version" {
  type    = string
  default = "0.1.0"
}

variable "demand_metric" {
  type        = string
  default     = "prometheus.googleapis.com/rabbitmq_detailed_queue_messages/gauge"
  description = "Per-group demand in job slots: the job queue's ready plus unacknowledged messages (waiting plus running jobs), as RabbitMQ's Prometheus plugin exports it."
}

locals {
  # The hosts' settings (/etc/default/mayfly); the broker URI is added at boot from Secret Manager.
  mayfly_settings = {
    TRAVIS_WORKER_PROVIDER_NAME          = "gce"
    TRAVIS_WORKER_QUEUE_TYPE             = "amqp"
    TRAVIS_WORKER_QUEUE_NAME             = var.queue_name
    TRAVIS_WORKER_POOL_SIZE              = var.slots_per_host
    TRAVIS_WORKER_INFRA                  = "gce"
    TRAVIS_WORKER_GCE_PROJECT_ID         = var.project
    TRAVIS_WORKER_GCE_ZONES              = var.zone
    TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR = "0.0.0.0:${local.control_port}"
    # /metrics for the Ops Agent's Prometheus receiver, on loopback only.
    TRAVIS_WORKER_PPROF_PORT    = "6060"
    TRAVIS_WORKER_PPROF_NO_AUTH = "true"
    # The fleet: hear preemption and maintenance, leave the group once idle, renew hosts daily.
    TRAVIS_WORKER_HOST_CLOUD          = "gce"
    TRAVIS_WORKER_HOST_TERMINATE      = "true"
    TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER = "10m"
    TRAVIS_WORKER_MAX_UPTIME          = "24h"
    TRAVIS_WORKER_SHUTDOWN_TIMEOUT    = "45m"
  }
  control_port = 8080
}

resource "google_service_account" "mayfly" {
  project      = var.project
  account_id   = "mayfly-host"
  display_name = "mayfly worker hosts"
}

# What the gce backend calls, one permission per call (the same list as deploy/gce/mayfly-role.yaml).
resource "google_project_iam_custom_role" "mayfly_worker" {
  project     = var.project
  role_id     = "mayflyWorker"
  title       = "mayfly worker"
  permissions = yamldecode(file("${path.module}/../gce/mayfly-role.yaml")).includedPermissions
}

# A host leaving its group: instanceGroupManagers.deleteInstances on itself.
resource "google_project_iam_custom_role" "mayfly_leave_group" {
  project     = var.project
  role_id     = "mayflyLeaveGroup"
  title       = "mayfly host leaves its group"
  permissions = ["compute.instanceGroupManagers.update"]
}

resource "google_project_iam_member" "mayfly" {
  for_each = {
    worker      = google_project_iam_custom_role.mayfly_worker.id
    leave_group = google_project_iam_custom_role.mayfly_leave_group.id
    # The Ops Agent writes the scraped /metrics to Cloud Monitoring.
    metric_writer = "roles/monitoring.metricWriter"
  }
  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.mayfly.email}"
}

resource "google_secret_manager_secret_iam_member" "amqp_uri" {
  project   = var.project
  secret_id = var.amqp_uri_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.mayfly.email}"
}

resource "google_compute_instance_template" "mayfly" {
  project      = var.project
  name_prefix  = "mayfly-host-"
  machine_type = "e2-standard-2"
  tags         = ["mayfly-host"]

  disk {
    source_image = var.host_image
    boot         = true
    disk_size_gb = 20
  }

  network_interface {
    network = "default"
    access_config {}
  }

  service_account {
    email  = google_service_account.mayfly.email
    scopes = ["cloud-platform"]
  }

  metadata = {
    user-data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
      settings        = local.mayfly_settings
      amqp_uri_secret = var.amqp_uri_secret
      mayfly_version  = var.mayfly_version
      unit            = file("${path.module}/../../systemd/mayfly.service")
    })
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_health_check" "mayfly" {
  project             = var.project
  name                = "mayfly-healthz"
  check_interval_sec  = 10
  timeout_sec         = 5
  unhealthy_threshold = 6

  http_health_check {
    port         = local.control_port
    request_path = "/healthz"
  }
}

# Google's health checkers reach /healthz from these ranges.
resource "google_compute_firewall" "health_checks" {
  project       = var.project
  name          = "mayfly-health-checks"
  network       = "default"
  source_ranges = ["35.191.0.0/16", "130.211.0.0/22"]
  target_tags   = ["mayfly-host"]

  allow {
    protocol = "tcp"
    ports    = [local.control_port]
  }
}

resource "google_compute_instance_group_manager" "mayfly" {
  project            = var.project
  name               = "mayfly-hosts"
  zone               = var.zone
  base_instance_name = "mayfly-host"

  version {
    instance_template = google_compute_instance_template.mayfly.id
  }

  auto_healing_policies {
    health_check = google_compute_health_check.mayfly.id
    # Boot, npm install and the first broker connection.
    initial_delay_sec = 300
  }

  # A host that drains must not be recreated under it: updates only take effect when hosts are replaced.
  update_policy {
    type           = "OPPORTUNISTIC"
    minimal_action = "REPLACE"
  }
}

resource "google_compute_autoscaler" "mayfly" {
  project = var.project
  name    = "mayfly-hosts"
  zone    = var.zone
  target  = google_compute_instance_group_manager.mayfly.id

  autoscaling_policy {
    min_replicas    = 0
    max_replicas    = var.max_hosts
    cooldown_period = 300
    mode            = "ONLY_SCALE_OUT"

    # Per group: waiting plus running jobs, one host per slots_per_host of them; zero demand, zero hosts.
    metric {
      name                       = var.demand_metric
      filter                     = "resource.type = \"prometheus_target\" AND metric.labels.queue = \"${var.queue_name}\""
      single_instance_assignment = var.slots_per_host
    }
  }
}
