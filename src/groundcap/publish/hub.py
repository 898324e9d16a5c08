"""Publishing to a Hugging Face Hub dataset repo: one commit holding exactly the release, tagged ``v{version}``.

The commit adds the release's files and deletes every other file of the repo (a previous release's
stale shards) but ``.gitattributes``, which ``upload_folder`` never deletes; the tag then names that
exact commit, so ``load_dataset(repo, revision=tag)`` gets this release and nothing else, for good.
Every Hub call goes through :meth:`_Hub.call`, which turns any failure into a :class:`PublishError`
whose message holds no credential and which chains nothing (the original may carry request headers).
"""

from __future__ import annotations

import glob

from groundcap.credentials import failure
from groundcap.publish.plan import Plan, PublishError

DATASET = "dataset"
_CONFLICT = 409


def token() -> str:
    """The Hub token (HF_TOKEN, or the file `hf auth login` writes); a PublishError saying how to set one if none."""
    from huggingface_hub import get_token

    if found := get_token():
        return found
    raise PublishError("no Hugging Face token found: set HF_TOKEN to a token with write access to the repo "
                       "(https://huggingface.co/settings/tokens) or run `hf auth login`")


class _Hub:
    """One dataset repo, reached with one token; every call redacted."""

    def __init__(self, repo_id: str, secret: str) -> None:
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self._secret = secret
        self._api = HfApi(token=secret)

    def call(self, method: str, *, on_conflict: str | None = None, **kwargs):
        """``HfApi.<method>`` on this dataset repo; ``on_conflict`` is the message for an HTTP 409."""
        try:
            return getattr(self._api, method)(repo_id=self.repo_id, repo_type=DATASET, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever it is, its text may hold the token
            conflict = getattr(getattr(exc, "response", None), "status_code", None) == _CONFLICT
            message = on_conflict if on_conflict and conflict else failure(f"{method} on {self.repo_id}", exc,
                                                                           self._secret)
        # raised outside the except block: no __context__ holding the original exception
        raise PublishError(message) from None


def publish_hub(plan: Plan, repo_id: str, private: bool) -> str:
    """Commit the release to ``repo_id`` and tag that commit; the commit's oid."""
    hub = _Hub(repo_id, token())
    hub.call("create_repo", exist_ok=True, private=private or None)  # None: the namespace's default visibility
    _refuse_existing(hub, plan.tag)
    commit = hub.call(
        "upload_folder",
        folder_path=plan.release,
        allow_patterns=[glob.escape(entry.path) for entry in plan.files],
        delete_patterns=["*"],  # the files being added are kept, .gitattributes too (upload_folder protects it)
        commit_message=f"Release {plan.tag} (groundcap)",
    )
    hub.call(
        "create_tag",
        tag=plan.tag,
        revision=commit.oid,
        on_conflict=f"tag {plan.tag} was created on {repo_id} while this publish ran; its commit {commit.oid[:7]} "
        f"holds this release untagged: see who published {plan.tag}, then bump release.version and rebuild",
    )
    return commit.oid


def _refuse_existing(hub: _Hub, tag: str) -> None:
    for ref in hub.call("list_repo_refs").tags:
        if ref.name == tag:
            raise PublishError(f"tag {tag} already exists on {hub.repo_id} at commit {ref.target_commit[:7]}; "
                               "published releases are immutable: bump release.version and rebuild")
