# Sourced by scripts/test: a single-node Docker Swarm on the local engine for
# the Swarm backend, made if the engine is in none and left again on exit. A Swarm that was there
# before is the developer's own: it stays. Plain containers are not affected by the engine being a
# Swarm manager.
swarm_made=
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  swarm_made=1
fi
leave_swarm() {
  [ -n "$swarm_made" ] || return 0
  docker swarm leave --force >/dev/null 2>&1 || true
  # Leaving keeps the bridge Swarm made for its containers' outside traffic.
  docker network rm docker_gwbridge >/dev/null 2>&1 || true
}
trap leave_swarm EXIT
