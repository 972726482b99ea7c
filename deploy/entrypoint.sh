#!/bin/bash
# Start one ringlock node in a container: derive its flags, then exec `kv serve`.
#
# In a Kubernetes StatefulSet (deploy/kubernetes/) the pod's hostname is SET-ORDINAL
# (ringlock-0, ringlock-1, ...) and every pod has the stable DNS name
#   SET-ORDINAL.SERVICE.NAMESPACE.svc.CLUSTER_DOMAIN
# through the headless Service SERVICE. From the hostname this script derives:
#   --name        the pod's stable DNS name and port (the node's identity; never an IP)
#   --join        the seed pod (ordinal RINGLOCK_SEED_ORDINAL, 0 by default); the seed
#                 itself gets no --join and, with an empty volume, creates a new cluster
#   --lock-peers  ids 1..RINGLOCK_LOCK_VOTERS at ordinals 0..RINGLOCK_LOCK_VOTERS-1
#   --lock-id     ordinal + 1 on those first pods (the lock service's Raft voters)
# Every node gets --lock-peers, so any node can check a write's sequencer (fencing).
# Everything else comes from the config file (RINGLOCK_CONFIG, a ConfigMap in Kubernetes);
# extra arguments to this script are passed on to `kv serve` (flags win over the file).
#
# Environment (defaults in brackets):
#   HOSTNAME                 the pod's hostname (set by the container runtime)
#   POD_NAMESPACE            the namespace (downward API) [default]
#   RINGLOCK_SERVICE         the headless Service's name [ringlock]
#   RINGLOCK_CLUSTER_DOMAIN  the cluster's DNS domain [cluster.local]
#   RINGLOCK_PORT            the port every node listens on [7000]
#   RINGLOCK_LOCK_VOTERS     how many of the first pods are lock voters, 0 for none [3]
#   RINGLOCK_SEED_ORDINAL    the pod the others join through [0]; point it at another
#                            live pod while the seed's volume is being rebuilt empty
#                            (a node that already has a ring ignores --join)
#   RINGLOCK_CONFIG          the TOML file [/etc/ringlock/ringlock.toml]
#   RINGLOCK_NAME            outside a StatefulSet: the node's HOST:PORT; when set, nothing
#                            is derived and only --config and --name are added
set -euo pipefail

config="${RINGLOCK_CONFIG:-/etc/ringlock/ringlock.toml}"

if [[ -n "${RINGLOCK_NAME:-}" ]]; then
    exec kv serve --config "$config" --name "$RINGLOCK_NAME" "$@"
fi

host="${HOSTNAME:-}"
if [[ ! "$host" =~ ^([a-z0-9]([-a-z0-9]*[a-z0-9])?)-(0|[1-9][0-9]{0,5})$ ]]; then
    echo "entrypoint: hostname '$host' is not SET-ORDINAL (a StatefulSet pod);" \
         "set RINGLOCK_NAME=HOST:PORT to run outside one" >&2
    exit 64
fi
set_name="${BASH_REMATCH[1]}"
ordinal="${BASH_REMATCH[3]}"

namespace="${POD_NAMESPACE:-default}"
service="${RINGLOCK_SERVICE:-ringlock}"
domain="${RINGLOCK_CLUSTER_DOMAIN:-cluster.local}"
port="${RINGLOCK_PORT:-7000}"
voters="${RINGLOCK_LOCK_VOTERS:-3}"
seed="${RINGLOCK_SEED_ORDINAL:-0}"
for number in "$port" "$voters" "$seed"; do
    if [[ ! "$number" =~ ^(0|[1-9][0-9]{0,4})$ ]]; then
        echo "entrypoint: RINGLOCK_PORT, RINGLOCK_LOCK_VOTERS and RINGLOCK_SEED_ORDINAL" \
             "must be decimal numbers, not '$number'" >&2
        exit 64
    fi
done

address() {  # address ORDINAL -> the stable DNS name and port of that pod
    echo "${set_name}-$1.${service}.${namespace}.svc.${domain}:${port}"
}

args=(serve --config "$config" --name "$(address "$ordinal")")
if ((ordinal != seed)); then
    args+=(--join "$(address "$seed")")
fi
if ((voters > 0)); then
    peers=""
    for ((i = 0; i < voters; i++)); do
        peers+="${peers:+,}$((i + 1))=$(address "$i")"
    done
    args+=(--lock-peers "$peers")
    if ((ordinal < voters)); then
        args+=(--lock-id "$((ordinal + 1))")
    fi
fi
exec kv "${args[@]}" "$@"
