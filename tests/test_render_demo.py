import numpy as np
from PIL import Image

from experiments.render_demo import main


def test_render_demo_writes_shaded_faces_over_grey(tmp_path, capsys):
    assert main(["-o", str(tmp_path), "--count", "2", "--size", "64"]) == 0
    front = np.asarray(Image.open(tmp_path / "mean_front.png")).astype(float)
    assert (tmp_path / "contact_sheet.png").is_file() and (tmp_path / "random_01.png").is_file()
    grey = np.abs(front - 128).sum(-1) < 3
    assert 0.2 < 1 - grey.mean() < 0.8          # a face covers part, not all, of the image
    face = front[~grey]
    assert face[:, 0].mean() > face[:, 2].mean()  # skin is redder than it is blue


def test_render_demo_reports_a_bad_bfm_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.mat"
    bad.write_text("nope")
    assert main(["-o", str(tmp_path), "--bfm", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.mat" in err and "\n" not in err
