"""batch-agent-aws task-metadata against the fake ECS task metadata endpoint v4 built
from the docs (awsvpc) and derived (host, bridge) samples."""

import sys

import fake_aws
from fake_aws import check, within

cases, case = fake_aws.case_list()
ARN = "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c"


def run(fake, *args):
    return fake_aws.run(list(args) + ["task-metadata"], {"ECS_CONTAINER_METADATA_URI_V4": fake.tmds_url})


@case
def awsvpc():
    with fake_aws.FakeAWS() as fake:
        r = run(fake)
        check(r.code == 0, "exit 0", r)
        check(r.json() == {"ipv4": "10.0.2.61", "networkMode": "awsvpc", "taskArn": ARN,
                           "region": "us-west-2", "availabilityZone": "us-west-2d",
                           "cpus": 10 / 1024, "memoryLimitBytes": 128 << 20}, "output", r)
        check(fake.count("tmds-container") == 1 and fake.count("tmds-task") == 1, "two GETs")


@case
def awsvpc_never_the_pause_container():
    with fake_aws.FakeAWS() as fake:
        # Pause container with another address, and no Networks on the container
        # endpoint, so the address must come from this container's /task entry.
        fake.tmds_pause_ip = "10.0.2.62"
        fake.tmds_container_without_networks = True
        r = run(fake)
        check(r.code == 0 and r.json()["ipv4"] == "10.0.2.61", "this container's address", r)


@case
def host_mode():
    with fake_aws.FakeAWS() as fake:
        fake.tmds_mode = "host"
        r = run(fake)
        check(r.code == 0, "exit 0", r)
        out = r.json()
        check(out["ipv4"] is None and out["networkMode"] == "host", "ipv4 null in host mode", r)
        check(out["region"] == "us-west-2", "region", r)


@case
def bridge_mode():
    with fake_aws.FakeAWS() as fake:
        fake.tmds_mode = "bridge"
        r = run(fake)
        check(r.code == 0 and r.json()["ipv4"] == "172.17.0.2" and r.json()["networkMode"] == "bridge",
              "bridge", r)


@case
def task_level_limits_win():
    with fake_aws.FakeAWS() as fake:
        fake.tmds_task_limits = {"CPU": 2, "Memory": 4096}
        r = run(fake)
        check(r.code == 0 and r.json()["cpus"] == 2 and r.json()["memoryLimitBytes"] == 4096 << 20,
              "task limits", r)


@case
def no_limits_no_networks_are_null():
    with fake_aws.FakeAWS() as fake:
        def strip(doc):
            doc.pop("Limits", None)
            doc.pop("Networks", None)
            doc.pop("AvailabilityZone", None)
            for c in doc.get("Containers", []):
                c.pop("Networks", None)
        fake.always["tmds-container"] = fake.always["tmds-task"] = "wrongtypes"
        fake.wrongtypes["tmds-container"] = fake.wrongtypes["tmds-task"] = strip
        r = run(fake)
        check(r.code == 0, "exit 0", r)
        out = r.json()
        check(out["ipv4"] is None and out["networkMode"] is None and out["cpus"] is None
              and out["memoryLimitBytes"] is None and out["availabilityZone"] is None, "nulls", r)


@case
def not_under_ecs_is_78():
    r = fake_aws.run(["task-metadata"])
    check(r.code == 78 and "not running under ECS" in r.err, "exit 78", r)


@case
def lookup_failure_404_is_76():
    with fake_aws.FakeAWS() as fake:
        fake.always["tmds-task"] = ("status", 404, fake_aws.sample_text("ecs_tmds_v4/error_404_task_lookup_DERIVED.json"))
        r = run(fake)
        check(r.code == 76 and "HTTP 404" in r.err and "unable to get task arn" in r.err, "exit 76", r)
        check(fake.count("tmds-task") == 1, "404 not retried")


@case
def server_error_retried_then_69():
    with fake_aws.FakeAWS() as fake:
        fake.always["tmds-container"] = ("status", 500, '"internal error"')
        r = run(fake)
        check(r.code == 69 and "HTTP 500" in r.err and fake.tmds_url in r.err, "exit 69", r)
        check(fake.count("tmds-container") == 3, "3 attempts")
        within(r, 5)


@case
def transient_error_then_success():
    with fake_aws.FakeAWS() as fake:
        fake.plan["tmds-task"] = [("status", 500, '"busy"'), "truncated"]
        r = run(fake)
        check(r.code == 0, "exit 0", r)


@case
def slow_endpoint_bounded():
    with fake_aws.FakeAWS() as fake:
        fake.always["tmds-container"] = "slow"
        r = run(fake)
        check(r.code == 69 and "no answer in time" in r.err, "exit 69", r)
        within(r, 12)
        r = run(fake, "--timeout", "0.3", "--max-attempts", "2")
        check(r.code == 69, "exit 69", r)
        within(r, 2)


@case
def non_json_and_huge_are_76():
    with fake_aws.FakeAWS() as fake:
        fake.always["tmds-task"] = "nonjson"
        r = run(fake)
        check(r.code == 76 and "not JSON" in r.err, "nonjson", r)
        fake.always["tmds-task"] = "huge-chunked"
        r = run(fake)
        check(r.code == 76 and "larger than" in r.err, "huge", r)


@case
def wrong_types_are_76_naming_the_field():
    muts = [
        ("tmds-task", lambda d: d.update(TaskARN=5), "field TaskARN: expected a string"),
        ("tmds-task", lambda d: d.update(TaskARN="arn:aws:s3:::bucket"), "field TaskARN: not an ECS task ARN"),
        ("tmds-task", lambda d: d.pop("TaskARN"), "field TaskARN: missing"),
        ("tmds-task", lambda d: d.update(Containers={}), "field Containers: expected an array"),
        ("tmds-task", lambda d: d.update(Limits={"CPU": "2"}), "field Limits.CPU: expected a number"),
        ("tmds-container", lambda d: d.update(Networks={}), "field Networks: expected an array"),
        ("tmds-container", lambda d: d["Networks"][0].update(IPv4Addresses=[10]),
         "field Networks[0].IPv4Addresses[0]: expected a string"),
        ("tmds-container", lambda d: d["Networks"][0].update(IPv4Addresses=["10.0.2.300"]),
         "field Networks[0].IPv4Addresses[0]: not an IPv4 address"),
        ("tmds-container", lambda d: d.update(Limits=[]), "field Limits: expected an object"),
    ]
    for route, mut, text in muts:
        with fake_aws.FakeAWS() as fake:
            fake.always[route] = "wrongtypes"
            fake.wrongtypes[route] = lambda d, mut=mut: (mut(d), d)[1]
            r = run(fake)
            check(r.code == 76 and text in r.err, "exit 76 with %r" % text, r)


@case
def unreachable_69_quick():
    dead = "http://127.0.0.1:%d/v4/x" % fake_aws.dead_port()
    r = fake_aws.run(["task-metadata"], {"ECS_CONTAINER_METADATA_URI_V4": dead})
    check(r.code == 69 and dead in r.err, "exit 69", r)
    within(r, 3)


if __name__ == "__main__":
    sys.exit(fake_aws.main_cases(cases))
