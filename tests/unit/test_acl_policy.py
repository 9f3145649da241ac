"""Attribute-based policies: outcomes, defaults, expiry, grant/revoke, search, store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servers.policy import (
    Condition,
    Outcome,
    Policy,
    PolicyError,
    PolicyStore,
    Requester,
    Rule,
    collection_scope,
    evaluate,
    image_scope,
    may_search,
)

NOW = 1_700_000_000.0
OWNER, ALICE, BOB, CAROL = "o" * 32, "a" * 32, "b" * 32, "c" * 32


def doctor(user: str, org: str = "St Mary", purpose: str | None = "treatment") -> Requester:
    return Requester(user, {"role": "doctor", "organisation": org}, purpose)


def test_defaults_owner_member_other():
    p = Policy(OWNER, frozenset({ALICE}))
    assert evaluate(p, Requester(OWNER), NOW) is Outcome.ORIGINAL
    assert evaluate(p, Requester(ALICE), NOW) is Outcome.DEIDENTIFIED
    assert evaluate(p, Requester(BOB), NOW) is Outcome.NOTHING
    assert may_search(p, Requester(ALICE), NOW) and not may_search(p, Requester(BOB), NOW)


def test_attribute_rule_with_purpose_and_expiry():
    rule = Rule(Condition(attributes={"role": {"doctor"}, "organisation": {"St Mary"}, "purpose": {"treatment"}},
                          expires=NOW + 3600), Outcome.ORIGINAL)
    p = Policy(OWNER, frozenset({ALICE}), rules=(rule,))
    assert evaluate(p, doctor(BOB), NOW) is Outcome.ORIGINAL
    assert evaluate(p, doctor(BOB, purpose="research"), NOW) is Outcome.NOTHING
    assert evaluate(p, doctor(BOB, org="Elsewhere"), NOW) is Outcome.NOTHING
    assert (
        evaluate(p, Requester(BOB, {"role": "nurse", "organisation": "St Mary"}, "treatment"), NOW) is Outcome.NOTHING
    )
    # expiry: valid strictly before `expires`, then the default applies again
    assert evaluate(p, doctor(BOB), NOW + 3599.9) is Outcome.ORIGINAL
    assert evaluate(p, doctor(BOB), NOW + 3600) is Outcome.NOTHING
    assert evaluate(p, doctor(ALICE), NOW + 3600) is Outcome.DEIDENTIFIED  # member default
    # not_before
    later = Policy(OWNER, rules=(Rule(Condition(frozenset({BOB}), not_before=NOW + 10), Outcome.ORIGINAL),))
    assert evaluate(later, Requester(BOB), NOW) is Outcome.NOTHING
    assert evaluate(later, Requester(BOB), NOW + 10) is Outcome.ORIGINAL


def test_limits_cap_and_deny_regardless_of_order():
    grant = Rule(Condition(frozenset({BOB})), Outcome.ORIGINAL)
    cap = Rule(Condition(attributes={"organisation": {"Rival"}}), Outcome.DEIDENTIFIED, limit=True)
    deny = Rule(Condition(attributes={"purpose": {"marketing"}}), Outcome.NOTHING, limit=True)
    for rules in ((grant, cap, deny), (deny, cap, grant)):
        p = Policy(OWNER, frozenset({ALICE}), rules=rules)
        assert evaluate(p, Requester(BOB, {"organisation": "Rival"}), NOW) is Outcome.DEIDENTIFIED
        assert evaluate(p, Requester(BOB, {"organisation": "Ok"}), NOW) is Outcome.ORIGINAL
        assert evaluate(p, Requester(ALICE, {}, "marketing"), NOW) is Outcome.NOTHING
        assert evaluate(p, Requester(OWNER, {}, "marketing"), NOW) is Outcome.ORIGINAL


def test_grant_revoke_regrant():
    p = Policy(OWNER, frozenset({ALICE}))
    p = p.grant(BOB, "ORIGINAL", expires=NOW + 60)
    assert evaluate(p, Requester(BOB), NOW) is Outcome.ORIGINAL and may_search(p, Requester(BOB), NOW)
    assert evaluate(p, Requester(BOB), NOW + 61) is Outcome.NOTHING and not may_search(p, Requester(BOB), NOW + 61)
    p = p.grant(ALICE, Outcome.ORIGINAL).revoke(ALICE)
    assert evaluate(p, Requester(ALICE), NOW) is Outcome.NOTHING and not may_search(p, Requester(ALICE), NOW)
    # a revoked user matching an attribute rule still gets nothing
    p = Policy(OWNER, rules=(Rule(Condition(attributes={"role": {"doctor"}}), Outcome.ORIGINAL),)).revoke(BOB)
    assert evaluate(p, doctor(BOB), NOW) is Outcome.NOTHING and evaluate(p, doctor(CAROL), NOW) is Outcome.ORIGINAL
    assert evaluate(p.grant(BOB, "DEIDENTIFIED"), doctor(BOB), NOW) is Outcome.ORIGINAL  # re-granted: revocation lifted
    with pytest.raises(PolicyError, match="unknown outcome"):
        p.grant(BOB, "EVERYTHING")


_users = st.sampled_from([OWNER, ALICE, BOB, CAROL])
_cond = st.builds(Condition, users=st.none() | st.frozensets(_users, max_size=2),
                  attributes=st.dictionaries(st.sampled_from(["role", "purpose"]),
                                             st.frozensets(st.sampled_from(["doctor", "nurse", "x"]), min_size=1),
                                             max_size=2),
                  not_before=st.none() | st.floats(NOW - 100, NOW + 100),
                  expires=st.none() | st.floats(NOW - 100, NOW + 100))
_policy = st.builds(Policy, owner=st.just(OWNER), members=st.frozensets(_users),
                    rules=st.lists(st.builds(Rule, _cond, st.sampled_from(list(Outcome)), st.booleans()), max_size=4)
                    .map(tuple), search=st.lists(_cond, max_size=2).map(tuple), revoked=st.frozensets(_users),
                    member_default=st.sampled_from(list(Outcome)), other_default=st.sampled_from(list(Outcome)),
                    member_search=st.booleans())


@settings(max_examples=150, deadline=None)
@given(_policy, _users, st.sampled_from([None, "doctor", "nurse"]), st.floats(NOW - 200, NOW + 200))
def test_serialisation_roundtrip_and_revocation_invariants(p, user, role, t):
    who = Requester(user, {"role": role} if role else {}, "doctor")
    q = Policy.from_json(p.to_json())
    assert q == p and q.to_json() == p.to_json()
    assert evaluate(q, who, t) is evaluate(p, who, t)
    assert evaluate(p, Requester(OWNER), t) is Outcome.ORIGINAL
    if user != OWNER:
        r = p.revoke(user)
        assert evaluate(r, who, t) is Outcome.NOTHING and not may_search(r, who, t)
    assert evaluate(p, who, t) == evaluate(Policy.from_dict(p.to_dict()), who, t)


def test_store_persists_and_revocation_is_immediate(tmp_path):
    db = tmp_path / "server0.db"
    s = PolicyStore(db)
    s.register_user(BOB, b"\x01" * 32, b"\x02" * 32, {"role": "doctor", "organisation": "St Mary"}, OWNER)
    s.create_collection("scans", OWNER, members=[ALICE])
    with pytest.raises(PolicyError, match="exists"):
        s.create_collection("scans", OWNER)
    s.assign_image(7, "scans")
    s.assign_image(8, "scans")
    rule = Rule(Condition(attributes={"role": {"doctor"}}), Outcome.ORIGINAL)
    s.put(image_scope(8), Policy(OWNER, rules=(rule,)))
    bob = s.requester(BOB, purpose="treatment")
    assert bob.attributes["role"] == "doctor" and s.signing_key(BOB) == b"\x01" * 32
    assert s.visibility([7, 8, 99], bob, NOW) == [Outcome.NOTHING, Outcome.ORIGINAL, Outcome.NOTHING]
    assert s.visibility([7, 8], s.requester(ALICE), NOW) == [Outcome.DEIDENTIFIED, Outcome.DEIDENTIFIED]
    assert not s.may_search("scans", bob, NOW) and s.may_search("scans", s.requester(ALICE), NOW)
    s.update(collection_scope("scans"), lambda p: p.grant(BOB, "DEIDENTIFIED", expires=NOW + 10))
    assert s.decide(7, bob, NOW) is Outcome.DEIDENTIFIED and s.may_search("scans", bob, NOW)
    # a second handle on the same file (another thread/process) sees the revocation at once
    other = PolicyStore(db)
    other.update(collection_scope("scans"), lambda p: p.revoke(BOB))
    assert s.decide(8, bob, NOW) is Outcome.NOTHING and s.decide(7, bob, NOW) is Outcome.NOTHING
    assert s.version(collection_scope("scans")) == 3
    s.delete_image(8)
    assert s.collection_of(8) is None and s.get(image_scope(8)) is None and s.decide(8, bob, NOW) is Outcome.NOTHING
    s.close()
    other.close()
    again = PolicyStore(db)  # restart
    assert again.decide(7, again.requester(ALICE), NOW) is Outcome.DEIDENTIFIED
    assert BOB in again.get(collection_scope("scans")).revoked
