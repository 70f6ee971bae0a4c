"""The retraining export fetches by the same rules as predictions (issue 17, item 6): Label
Studio's origin with its token, allowed hosts without, nothing else. A task whose picture cannot
be fetched fails the export, naming the task."""

from __future__ import annotations

import json
import urllib.parse

import cv2
import pytest
from hostile import LEGACY_TOKEN, PAT, fake_label_studio
from test_labelstudio_data import CONFIG, brush_result, shapes

from dextr_backend.data.objects import folder_objects
from dextr_backend.errors import InputError
from dextr_backend.labelstudio.client import LabelStudioClient
from dextr_backend.labelstudio.export import export_labelstudio


def picture() -> bytes:
    image, *_ = shapes()
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def serve_projects(ls, projects: dict[int, list[tuple[int, str]]]) -> None:
    """``/api/projects/<id>`` and ``/api/tasks?project=<id>``: tasks ``(id, image URL)``, each with
    one accepted brush region."""
    _, brush, _, _ = shapes()
    for pid in projects:
        ls.json(f"/api/projects/{pid}", {"id": pid, "label_config": CONFIG})

    def tasks(handler, _):
        pid = int(urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)["project"][0])
        page = [
            {
                "id": tid,
                "data": {"image": url},
                "annotations": [{"id": tid, "result": [brush_result(brush)], "was_cancelled": False}],
            }
            for tid, url in projects[pid]
        ]
        handler.answer(
            200, json.dumps({"tasks": page, "total": len(page)}).encode(), {"Content-Type": "application/json"}
        )

    ls.routes["/api/tasks"] = tasks


@pytest.mark.parametrize("kind", ["legacy", "pat"])
def test_export_fetches_nothing_off_the_allow_list(servers, tmp_path, kind):
    token = LEGACY_TOKEN if kind == "legacy" else PAT
    ls = fake_label_studio(servers("127.0.0.1"), token, pat=kind == "pat")
    allowed = servers("127.0.0.2")
    hostile = servers("127.0.0.3")
    hostile.file("/x.png", picture())
    allowed.file("/b.png", picture())
    ls.file("/data/upload/4/a.png", picture())
    ls.redirect("/data/upload/3/r.png", hostile.url + "/x.png")
    ls.redirect("/data/upload/4/r.png", allowed.url + "/b.png")
    serve_projects(
        ls,
        {
            1: [(11, "file:///etc/passwd")],
            2: [(21, hostile.url + "/x.png")],
            3: [(31, "/data/upload/3/r.png")],
            4: [(41, "/data/upload/4/a.png"), (42, allowed.url + "/b.png"), (43, "/data/upload/4/r.png")],
        },
    )
    client = LabelStudioClient(ls.url, token, allowed_hosts=(allowed.netloc,))
    expected = {
        1: "project 1 task 11: cannot fetch file:///etc/passwd: not allowed (scheme 'file'",
        2: f"project 2 task 21: cannot fetch {hostile.url}/x.png: not allowed (host 127.0.0.3",
        3: "project 3 task 31: cannot fetch /data/upload/3/r.png: redirect to a host that is not allowed",
    }
    for pid, message in expected.items():
        folder = tmp_path / f"p{pid}"
        with pytest.raises(InputError) as err:
            export_labelstudio(client, pid, folder)
        assert str(err.value).startswith(message), str(err.value)
        assert not folder.exists() and not folder.with_name(folder.name + ".partial").exists()
    assert hostile.log == []

    folder = export_labelstudio(client, 4, tmp_path / "p4")
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["41.png", "42.png", "43.png"]
    assert len(folder_objects(folder)) == 3
    assert len(allowed.log) == 2 and allowed.leaks() == []
    assert all(r["authorization"] for r in ls.log if r["line"].startswith(("GET /api", "GET /data")))


def test_without_the_client_s_allowed_hosts_other_hosts_are_refused(servers, tmp_path):
    ls = fake_label_studio(servers("127.0.0.1"), LEGACY_TOKEN)
    other = servers("127.0.0.2")
    other.file("/b.png", picture())
    serve_projects(ls, {5: [(51, other.url + "/b.png")]})
    with pytest.raises(InputError, match="project 5 task 51: .* not allowed"):
        export_labelstudio(LabelStudioClient(ls.url, LEGACY_TOKEN), 5, tmp_path / "p5")
    assert other.log == []


def test_a_data_image_task_is_exported_without_a_fetch(servers, tmp_path):
    """A task whose data is a ``data:image/...;base64,`` URI (Label Studio accepts such data) trains
    like any other: the picture is decoded from the task, and nothing is fetched for it."""
    import base64

    ls = fake_label_studio(servers("127.0.0.1"), LEGACY_TOKEN)
    inline = "data:image/png;base64," + base64.b64encode(picture()).decode()
    serve_projects(ls, {6: [(61, inline)], 7: [(71, "data:image/png;base64,@@@")]})
    folder = export_labelstudio(LabelStudioClient(ls.url, LEGACY_TOKEN), 6, tmp_path / "p6")
    assert [p.name for p in (folder / "images").iterdir()] == ["61.png"]
    assert len(folder_objects(folder)) == 1
    assert not any(r["line"].startswith("GET /data") for r in ls.log)
    with pytest.raises(InputError, match="project 7 task 71: .*not valid base64"):
        export_labelstudio(LabelStudioClient(ls.url, LEGACY_TOKEN), 7, tmp_path / "p7")
