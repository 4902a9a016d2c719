"""Research code of c2s, kept apart from the product (``c2s_cli``): the benchmarks, their harness, research models
and the fuzzer. Each experiment is a module run as ``python -m c2s_bench.NAME`` from the repository root; its results
go to ``benchmarks/results/`` and its conclusions to ``benchmarks/README.md``.

The arrows point one way: ``c2s_bench`` imports ``c2s_cli``; ``c2s_cli`` never imports ``c2s_bench``
(``tests/test_imports.py`` checks it).

* ``harness``: what every result records (date, machine, command), the shared options, the noise, mask and metrics;
* ``phantoms``: synthetic heads and a DICOM series writer, shared with the tests;
* ``models/``: research networks and peer objectives (the 3-D candidate, Noise2Self / Neighbor2Neighbor / R2R);
* one module per experiment (``unseen``, ``do_no_harm``, ``sigma_map``, ``speed``, …).
"""
