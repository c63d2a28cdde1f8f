# mayfly hosts in an EC2 Auto Scaling group (docs/fleet.md, "Running in an
# EC2 Auto Scaling group"). Each host runs mayfly under systemd (booted by
# cloud-init, cloud-init.yaml.tftpl) with the ec2 backend: its job instances
# are launched by the host's instance profile.
#
# On-demand and spot hosts mixed; IMDSv2 required. Scale-in goes through a
# termination lifecycle hook that the host completes itself once drained
# (TRAVIS_WORKER_ASG_LIFECYCLE_HOOK), spot interruptions through the host's
# own watch of IMDS; idle hosts leave by themselves (IDLE_SHUTDOWN_AFTER +
# HOST_TERMINATE). Target tracking keeps the demand per host at one host's slots.
#
#   terraform init && terraform apply -var 'subnet_ids=["subnet-..."]' -var amqp_uri_parameter=/mayfly/amqp-uri
#
# test/integration/deploy-terraform.test.ts parses this file and checks every
# mayfly setting it sets against the worker's own settings.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets of the hosts."
}

variable "queue_name" {
  type    = string
  default = "builds.ec2"
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

variable "amqp_uri_parameter" {
  type        = string
  description = "SSM parameter (SecureString) holding TRAVIS_WORKER_AMQP_URI: it carries the broker's password, so it stays out of user data."
}

variable "host_ami" {
  type        = string
  default     = "resolve:ssm:/aws/service/debian/release/12/latest/amd64"
  description = "AMI of the hosts; cloud-init installs Node.js and mayfly on first boot."
}

variable "mayfly_version" {
  type    = string
  default = "0.1.0"
}

data "aws_caller_identity" "current" {}

locals {
  group_name     = "mayfly-hosts"
  lifecycle_hook = "mayfly-drain"
  # The hosts' settings (/etc/default/mayfly); the broker URI is added at boot from SSM.
  mayfly_settings = {
    TRAVIS_WORKER_PROVIDER_NAME          = "ec2"
    TRAVIS_WORKER_QUEUE_TYPE             = "amqp"
    TRAVIS_WORKER_QUEUE_NAME             = var.queue_name
    TRAVIS_WORKER_POOL_SIZE              = var.slots_per_host
    TRAVIS_WORKER_INFRA                  = "ec2"
    TRAVIS_WORKER_EC2_REGION             = var.region
    TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR = "127.0.0.1:8080"
    # /metrics for the CloudWatch agent's Prometheus scrape, on loopback only.
    TRAVIS_WORKER_PPROF_PORT    = "6060"
    TRAVIS_WORKER_PPROF_NO_AUTH = "true"
    # The fleet: hear spot and scale-in notices, complete the hook, leave once idle, renew hosts daily.
    TRAVIS_WORKER_HOST_CLOUD          = "aws"
    TRAVIS_WORKER_ASG_LIFECYCLE_HOOK  = local.lifecycle_hook
    TRAVIS_WORKER_HOST_TERMINATE      = "true"
    TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER = "10m"
    TRAVIS_WORKER_MAX_UPTIME          = "24h"
    TRAVIS_WORKER_SHUTDOWN_TIMEOUT    = "45m"
  }
}

resource "aws_iam_role" "mayfly" {
  name = "mayfly-host"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

# What the ec2 backend calls (the same policy as deploy/aws/mayfly-policy.json).
resource "aws_iam_role_policy" "worker" {
  name   = "mayfly-worker"
  role   = aws_iam_role.mayfly.id
  policy = file("${path.module}/../aws/mayfly-policy.json")
}

# The host in its group: find the group, keep and complete the lifecycle action, leave the group.
resource "aws_iam_role_policy" "fleet" {
  name = "mayfly-fleet"
  role = aws_iam_role.mayfly.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "FindOwnGroup"
        Effect   = "Allow"
        Action   = "autoscaling:DescribeAutoScalingInstances"
        Resource = "*"
      },
      {
        Sid    = "OwnGroupOnly"
        Effect = "Allow"
        Action = [
          "autoscaling:RecordLifecycleActionHeartbeat",
          "autoscaling:CompleteLifecycleAction",
          "autoscaling:TerminateInstanceInAutoScalingGroup",
        ]
        Resource = "arn:aws:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.group_name}"
      },
      {
        Sid      = "BrokerUri"
        Effect   = "Allow"
        Action   = "ssm:GetParameter"
        Resource = "arn:aws:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${var.amqp_uri_parameter}"
      },
      {
        Sid      = "DemandMetrics"
        Effect   = "Allow"
        Action   = "cloudwatch:PutMetricData"
        Resource = "*"
        Condition = { StringEquals = { "cloudwatch:namespace" = "mayfly" } }
      },
    ]
  })
}

resource "aws_iam_instance_profile" "mayfly" {
  name = "mayfly-host"
  role = aws_iam_role.mayfly.name
}

resource "aws_launch_template" "mayfly" {
  name_prefix   = "mayfly-host-"
  image_id      = var.host_ami
  instance_type = "m6i.large"

  iam_instance_profile {
    arn = aws_iam_instance_profile.mayfly.arn
  }

  # IMDSv2 only; two hops would let containers on the host read the role's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  user_data = base64encode(templatefile("${path.module}/cloud-init.yaml.tftpl", {
    settings           = local.mayfly_settings
    amqp_uri_parameter = var.amqp_uri_parameter
    region             = var.region
    mayfly_version     = var.mayfly_version
    unit               = file("${path.module}/../../systemd/mayfly.service")
  }))
}

resource "aws_autoscaling_group" "mayfly" {
  name                = local.group_name
  min_size            = 0
  max_size            = var.max_hosts
  vpc_zone_identifier = var.subnet_ids
  # Boot, npm install and the first broker connection.
  default_instance_warmup = 300
  capacity_rebalance      = true

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 1
      on_demand_percentage_above_base_capacity = 25
      spot_allocation_strategy                 = "price-capacity-optimized"
    }
    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.mayfly.id
        version            = "$Latest"
      }
      override {
        instance_type = "m6i.large"
      }
      override {
        instance_type = "m5.large"
      }
      override {
        instance_type = "m7i.large"
      }
    }
  }

  # Scale-in waits for the host to drain; it completes the action itself, sending heartbeats meanwhile.
  initial_lifecycle_hook {
    name                 = local.lifecycle_hook
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = 600
    default_result       = "CONTINUE"
  }
}

# Demand per host in job slots: (ready jobs + jobs running on every host) / hosts in service, kept at
# one host's slots. The hosts' CloudWatch agents publish mayfly_queue_ready_jobs (the same on every
# host: take the maximum) and mayfly_processors{state="busy"} (per host: take the sum) to "mayfly".
resource "aws_autoscaling_policy" "demand" {
  name                   = "mayfly-demand-per-host"
  autoscaling_group_name = aws_autoscaling_group.mayfly.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.slots_per_host

    customized_metric_specification {
      metrics {
        id          = "ready"
        return_data = false
        metric_stat {
          metric {
            namespace   = "mayfly"
            metric_name = "mayfly_queue_ready_jobs"
            dimensions {
              name  = "queue"
              value = "amqp"
            }
          }
          stat = "Maximum"
        }
      }
      metrics {
        id          = "running"
        return_data = false
        metric_stat {
          metric {
            namespace   = "mayfly"
            metric_name = "mayfly_processors"
            dimensions {
              name  = "state"
              value = "busy"
            }
          }
          stat = "Sum"
        }
      }
      metrics {
        id          = "hosts"
        return_data = false
        metric_stat {
          metric {
            namespace   = "AWS/AutoScaling"
            metric_name = "GroupInServiceInstances"
            dimensions {
              name  = "AutoScalingGroupName"
              value = aws_autoscaling_group.mayfly.name
            }
          }
          stat = "Average"
        }
      }
      metrics {
        id          = "demand_per_host"
        label       = "job slots wanted per host"
        expression  = "(ready + running) / MAX([hosts, 1])"
        return_data = true
      }
    }
  }
}
