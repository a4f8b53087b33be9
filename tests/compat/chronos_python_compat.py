"""Drives kairos with the unmodified chronos-python client (PyPI), in v1 and legacy (2.x) modes,
and checks that every job shape of the integration tests survives "list, then update(job)".

Usage: python chronos_python_compat.py HOST:PORT [USER PASSWORD]. With credentials it also checks
that a client without them is refused. Exits non-zero with a message on the first mismatch.
"""
import sys
import time

import chronos


def wait(what, check, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def exercise(client, suffix):
    parent = {
        "name": "py-parent" + suffix,
        "command": "true",
        "owner": "py@example.com",
        "disabled": False,
        "async": False,
        "schedule": "R0/2014-01-01T00:00:00Z/PT60M",
    }
    child = {
        "name": "py-child" + suffix,
        "command": "true",
        "owner": "py@example.com",
        "disabled": False,
        "async": False,
        "parents": [parent["name"]],
    }
    client.add(parent)
    client.add(child)
    names = [job["name"] for job in client.list()]
    assert parent["name"] in names and child["name"] in names, names
    found = client.search(name="py-parent" + suffix)
    assert [j["name"] for j in found] == [parent["name"]], found

    parent["command"] = "echo updated"
    client.add(parent, update=True)
    [updated] = client.search(name=parent["name"])
    assert updated["command"] == "echo updated", updated

    stat = client.job_stat(parent["name"])
    assert stat["histogram"]["count"] == 0 and stat["taskStatHistory"] == [], stat
    for percentile in (client.scheduler_stat_99th(), client.scheduler_stat_mean()):
        assert isinstance(percentile, list), percentile

    client.run(parent["name"])
    wait("the child to run after its parent",
         lambda: any(j["name"] == child["name"] and j["successCount"] == 1 for j in client.list()))
    csv = client.scheduler_graph()
    assert "link,%s,%s" % (parent["name"], child["name"]) in csv, csv

    client.delete_tasks(parent["name"])
    try:
        client.add({"name": "bad name" + suffix, "command": "x", "owner": "", "disabled": False,
                    "async": False, "schedule": "R//PT1S"})
        raise AssertionError("an invalid name was accepted")
    except chronos.ChronosAPIError:
        pass
    assert not client.search(name="bad name" + suffix), "a rejected job was stored"
    client.delete(child["name"])
    client.delete(parent["name"])
    remaining = [j["name"] for j in client.list()]
    assert parent["name"] not in remaining and child["name"] not in remaining, remaining


def shapes(suffix):
    """Every job shape the integration tests post, named apart per mode."""
    later = "R/2030-01-01T00:00:00Z/P1D"
    base = {"command": "true", "owner": "py@example.com", "disabled": False, "async": False}

    def job(name, **fields):
        return dict(base, name=name + suffix, **fields)

    return [
        job("rt-plain", schedule=later),
        job("rt-full", command="run.sh", shell=False, epsilon="PT30S", executor="exec",
            executorFlags="-f", taskInfoData="data", retries=5, ownerName="A", description="d",
            cpus=2.0, disk=10.0, mem=64.0, softError=True, dataProcessingJobType=True,
            environmentVariables=[{"name": "A", "value": "1"}], arguments=["-v"],
            highPriority=True, runAsUser="nobody", concurrent=True, maxCompletionTime=30,
            container={"type": "DOCKER", "image": "busybox", "network": "BRIDGE",
                       "networkInfos": [{"name": "n", "portMappings": [
                           {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}],
                       "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RO"}],
                       "forcePullImage": True, "parameters": [{"key": "label", "value": "x=y"}]},
            constraints=[["rack", "EQUALS", "r1"], ["dc", "LIKE", "eu-.*"]],
            schedule="R5/2030-01-01T00:00:00Z/PT1H", scheduleTimeZone="Europe/Paris"),
        job("rt-uris", schedule=later, uris=["http://x/a.tgz"]),
        job("rt-fetch", schedule=later, fetch=[
            {"uri": "http://x/b", "output_file": "b.tgz", "extract": False},
            {"uri": "http://x/c.tgz", "cache": True}]),
        job("rt-r0", schedule="R0/2014-01-01T00:00:00Z/PT60M"),
        job("rt-child", parents=["rt-plain" + suffix, "rt-plain" + suffix, "rt-uris" + suffix]),
        job("rt-grandchild", parents=["rt-child" + suffix], softError=True),
    ]


def round_trip(client, suffix):
    """Lists the jobs and posts each back unchanged with `update`: the list must not change."""
    posted = shapes(suffix)
    for job in posted:
        client.add(job)
    mine = lambda: [j for j in client.list() if j["name"].endswith(suffix) and j["name"].startswith("rt-")]
    before = mine()
    assert len(before) == len(posted), before
    for job in before:
        client.update(job)
    after = mine()
    for old, new in zip(before, after):
        assert old == new, "re-posting %s changed it:\n%s\n%s" % (old["name"], old, new)
    assert len(before) == len(after), after
    for job in reversed(posted):
        client.delete(job["name"])


def main():
    server = sys.argv[1]
    auth = {}
    if len(sys.argv) > 3:
        auth = {"username": sys.argv[2], "password": sys.argv[3]}
        try:
            chronos.connect([server]).list()
        except chronos.ChronosAPIError:
            pass
        else:
            raise AssertionError("a client without credentials was let in")
    exercise(chronos.connect([server], **auth), "-v1")
    exercise(chronos.connect([server], scheduler_api_version=None, **auth), "-legacy")
    round_trip(chronos.connect([server], **auth), "-v1")
    round_trip(chronos.connect([server], scheduler_api_version=None, **auth), "-legacy")
    metrics = chronos.connect([server], **auth).metrics()
    assert "version" in metrics and "gauges" in metrics, metrics
    print("chronos-python compatibility: ok")


if __name__ == "__main__":
    main()
