#!/bin/sh
# Forms the Redis Cluster of deploy/docker-compose.cluster.yml from the nodes named as
# arguments (three primaries, a replica each), or, when they already form one, tells every
# node the others' current addresses (containers created again may have new ones: a node
# that knows a peer by its id takes the new address from the handshake). Then waits until
# every node serves every slot. Safe to run on every `up`.
set -eu
PORT=6379
[ "$#" -ge 6 ] || { echo "redis-cluster: name at least six nodes (three primaries, three replicas)"; exit 1; }

ip_of() {
  tries=0
  until address=$(getent ahostsv4 "$1" | awk 'NR == 1 { print $1 }') && [ -n "$address" ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 30 ] || { echo "redis-cluster: $1 does not resolve" >&2; exit 1; }
    sleep 1
  done
  echo "$address"
}

info() { redis-cli -h "$1" -p "$PORT" cluster info | tr -d '\r' | awk -F: -v key="$2" '$1 == key { print $2 }'; }

addresses=""
fresh=""
formed=""
for node in "$@"; do
  addresses="$addresses $(ip_of "$node")"
  if [ "$(info "$node" cluster_known_nodes)" = 1 ]; then fresh="$fresh $node"; else formed="$formed $node"; fi
done

if [ -z "$formed" ]; then
  echo "redis-cluster: forming a cluster of $# nodes:$addresses"
  # shellcheck disable=SC2086 # one argument per address
  redis-cli --cluster create $(for a in $addresses; do printf '%s:%s ' "$a" "$PORT"; done) \
    --cluster-replicas 1 --cluster-yes
elif [ -n "$fresh" ]; then
  echo "redis-cluster: node(s)$fresh have no cluster state while$formed belong to a cluster (a lost volume?)."
  echo "redis-cluster: add them with 'redis-cli --cluster add-node', or start over with 'docker compose down -v'."
  exit 1
else
  echo "redis-cluster: already formed; telling each node the others' current addresses"
  for node in "$@"; do
    for address in $addresses; do
      redis-cli -h "$node" -p "$PORT" cluster meet "$address" "$PORT" >/dev/null
    done
  done
fi

# Settled: every node serves every slot and sees every other node, none of them failing or mid-handshake
# (addresses a node learns anew clear its failure flags only once it reaches that node again).
settled() {  # NODE COUNT
  [ "$(info "$1" cluster_state)" = ok ] && [ "$(info "$1" cluster_known_nodes)" = "$2" ] || return 1
  ! redis-cli -h "$1" -p "$PORT" cluster nodes | grep -Eq 'fail|handshake|noaddr'
}
waited=0
for node in "$@"; do
  until settled "$node" "$#"; do
    waited=$((waited + 1))
    if [ "$waited" -gt 240 ]; then
      echo "redis-cluster: $node did not see every slot served and every node up within 120 s:"
      redis-cli -h "$node" -p "$PORT" cluster info
      redis-cli -h "$node" -p "$PORT" cluster nodes
      exit 1
    fi
    sleep 0.5
  done
done
echo "redis-cluster: serving every slot on $# nodes"
