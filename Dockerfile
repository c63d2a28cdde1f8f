# syntax=docker/dockerfile:1
# mayfly in a container: build with the dev dependencies, ship with the
# production ones only, run as an unprivileged user. docs/operations.md,
# "Run in a container", shows how to run it (give `docker stop` a long enough timeout:
# the drain needs up to TRAVIS_WORKER_SHUTDOWN_TIMEOUT).
# Node 24, the LTS mayfly targets (and the one CI tests besides the machine's);
# 22 works too: --build-arg NODE_IMAGE=node:22-bookworm-slim.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY backends ./backends
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE}
# tini reaps the processes jobs leave behind (local backend) and passes
# signals on to mayfly, which is then not PID 1.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/mayfly --create-home --shell /usr/sbin/nologin mayfly
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json config.example.env ./
RUN chmod 0755 dist/bin/mayfly.js && ln -s /app/dist/bin/mayfly.js /usr/local/bin/mayfly

# The control API inside the container, for the HEALTHCHECK below. To reach
# it from outside, set 0.0.0.0:8080 and TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH.
ENV NODE_ENV=production \
    TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR=127.0.0.1:8080
EXPOSE 8080

USER mayfly
WORKDIR /var/lib/mayfly
# SIGTERM drains (running jobs finish or are requeued, instances destroyed).
STOPSIGNAL SIGTERM
# /healthz answers 200 while the process serves; any host:port the control
# API is configured on is probed on loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const a=process.env.TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR||'127.0.0.1:8080';const p=a.slice(a.lastIndexOf(':')+1);fetch('http://127.0.0.1:'+p+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "mayfly"]
