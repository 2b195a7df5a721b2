#!/usr/bin/env bash
# The GPU checks of one lent GPU machine (no network there), in the calls that its 15 minutes allow.
#
# What travels: the repository, plus folders ignored by git holding onnxruntime-gpu in parts
# (`tar` of the unpacked wheel, `xz`, `split -b 50M`: no part and the tree past the 64 MiB a call
# carries) and the small wheels and sdists (onnxslim, pycocotools, pycuda and what it builds with).
#
#   bash benchmarks/gpu_session.sh pack         # HERE, before: download, pack and split into .gpu1-.gpu4
#                                               # (ignored by git), one folder to carry per call
#   bash benchmarks/gpu_session.sh start DIR    # first call: keep DIR's files; build pycuda in the
#                                               # background (setsid), while the next calls carry parts
#   bash benchmarks/gpu_session.sh add DIR      # each next call: keep DIR's part; show the build's log
#   bash benchmarks/gpu_session.sh run          # last call: install onnxruntime-gpu; the data-flow
#                                               # figures, the gpu-marked tests, the pipeline with and
#                                               # without --track, the demo on CUDA, gpu_speed.py; logs in $OUT
#
# Each step has its own time limit, so that one that hangs leaves the others' figures. The first
# run (2026-12-04) took 336 s for gpu_speed.py and the demo, after 4 calls of 10-20 s carrying parts
# and a start of about 30 s; its tests ran in the background beside gpu_speed.py, and their log was
# copied before they ended: now they run after it, in the foreground. The second run (197 s:
# gpu_speed.py on two models and the data flow) carried the parts with plain `cp` and no pycuda.
# The third (2026-12-04, evening) put the checks not run before first: pycuda's data flow and tests,
# the pipeline's FPS with and without --track on CUDA, the demo with --track; gpu_speed.py last
# (GPU_SPEED_ARGS narrows it).
set -u
PARTS=/tmp/edge-fpn-parts
SITE=/tmp/edge-fpn-site
LOGS=/tmp/edge-fpn-logs
OUT=${OUT:-/tmp/edge-fpn-out}
mkdir -p "$PARTS" "$SITE" "$LOGS" "$OUT"
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
PYTHON=${PYTHON:-python3}

pack() {  # on this machine: the folders to carry, each under the 64 MiB a call takes with the tree
    local work=/tmp/edge-fpn-pack platform="--python-version 3.12 --implementation cp --only-binary=:all: \
--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
    rm -rf "$work" .gpu1 .gpu2 .gpu3 .gpu4 && mkdir -p "$work/unpacked" .gpu1 .gpu2 .gpu3 .gpu4 .git/info || exit 2
    for folder in .gpu1 .gpu2 .gpu3 .gpu4; do
        grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >> .git/info/exclude
    done
    # shellcheck disable=SC2086
    pip download -q --no-deps $platform -d "$work" onnxruntime-gpu==1.31.1 onnxslim pycocotools pytools \
        platformdirs mako siphash24 || exit 2
    pip download -q --no-deps --no-binary=:all: --no-build-isolation -d .gpu1 pycuda 2>/dev/null ||
        (cd .gpu1 && curl -sfO "$(curl -sf https://pypi.org/pypi/pycuda/json | "$PYTHON" -c \
            "import json,sys; print([u['url'] for u in json.load(sys.stdin)['urls'] if u['packagetype'] == 'sdist'][0])")") ||
        exit 2  # pip cannot make pycuda's metadata without CUDA: the sdist from PyPI's JSON
    (cd "$work/unpacked" && unzip -q "$work"/onnxruntime_gpu-*.whl && tar cf - . | xz -9 -T2 > "$work/ort.tar.xz") || exit 2
    split -b 50M -d -a 1 "$work/ort.tar.xz" "$work/ort.part."
    for i in 0 1 2 3; do mv "$work/ort.part.$i" ".gpu$((i + 1))/"; done
    [ ! -e "$work/ort.part.4" ] || { echo "gpu_session: onnxruntime-gpu needs a fifth part"; exit 2; }
    rm "$work"/onnxruntime_gpu-*.whl && mv "$work"/*.whl .gpu1/
    du -sh .gpu1 .gpu2 .gpu3 .gpu4
}

keep() {  # copy one carried folder's files to $PARTS
    [ -d "$1" ] || { echo "gpu_session: no folder $1 was carried"; exit 2; }
    cp "$1"/* "$PARTS"/ && ls -la "$PARTS"
}

background() {  # pycuda from its sdist (about 2 minutes)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$PARTS"/*.whl
    (cd /tmp && timeout 300 "$PYTHON" -m pip wheel -q --no-build-isolation --no-deps -w /tmp/edge-fpn-pycuda \
        "$PARTS"/pycuda-*.tar.gz) && "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" \
        /tmp/edge-fpn-pycuda/pycuda-*.whl
    echo "pycuda build exit $?"
    "$PYTHON" -c "import pycuda.driver as d; d.init(); print('pycuda', d.get_version(), d.Device(0).name())"
    touch "$LOGS/background.done"
}

case "${1:-}" in
pack)
    pack
    ;;
start)
    keep "$2"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    "$PYTHON" -c "import sys, numpy, torch, torchvision, onnx, onnxruntime, cv2; from cuda import bindings; \
print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, torchvision.__version__, \
'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, 'cv2', cv2.__version__, 'cuda.bindings', bindings.__version__)"
    setsid bash "$0" background > "$LOGS/background.log" 2>&1 < /dev/null &
    sleep 2; echo "background started"
    ;;
background)
    background
    ;;
add)
    keep "$2"
    tail -n 15 "$LOGS/background.log"
    ;;
run)
    cat "$PARTS"/ort.part.* > /tmp/ort.tar.xz && "$PYTHON" -c "import tarfile; \
tarfile.open('/tmp/ort.tar.xz', 'r:xz').extractall('$SITE')" || { echo "gpu_session: onnxruntime-gpu did not unpack"; exit 2; }
    "$PYTHON" -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
    if [ -f "$LOGS/background.log" ]; then  # `start` began pycuda's build: an idle machine to time on
        for i in $(seq 1 60); do [ -f "$LOGS/background.done" ] && break; sleep 2; done
        cp "$LOGS/background.log" "$OUT/pycuda_build.log"; tail -n 5 "$OUT/pycuda_build.log"
    fi
    # The new checks first (pycuda's data flow and tests, tracking in the pipeline), the repeat last.
    echo "== benchmarks/tensorrt_data_flow.py (device memory through the TensorRT backend, both layouts)"
    mkdir -p /tmp/edge-fpn-flow && "$PYTHON" -m edge_fpn.cli export --model shapes --output /tmp/edge-fpn-flow/engine --force --quiet &&
        "$PYTHON" -m edge_fpn.cli export --model shapes --postprocess host --output /tmp/edge-fpn-flow/host --force --quiet &&
        timeout 120 "$PYTHON" benchmarks/tensorrt_data_flow.py /tmp/edge-fpn-flow/engine /tmp/edge-fpn-flow/host \
            --frames 60 2>&1 | tee "$OUT/data_flow.log"
    echo "== gpu-marked tests (cuda-python, and pycuda where it built)"
    timeout 150 "$PYTHON" -m pytest -q -rs -m gpu -p no:cacheprovider tests/test_tensorrt_data_flow.py \
        tests/test_tensorrt_backend.py tests/test_tensorrt_builder.py 2>&1 | tee "$OUT/gpu_tests.log"
    echo "== benchmarks/track_overhead.py --device cuda (the pipeline's FPS with and without --track)"
    timeout 150 "$PYTHON" benchmarks/track_overhead.py --bundle /tmp/edge-fpn-flow/engine --device cuda \
        --rounds ${TRACK_ROUNDS:-5} --frames 300 2>&1 | tee "$OUT/track_overhead.log"
    echo "== edge-fpn demo --device cuda --track"
    timeout 90 "$PYTHON" -m edge_fpn.cli demo --device cuda --track --seconds 10 --output /tmp/edge-fpn-demo --quiet \
        2>&1 | tee "$OUT/demo.log"
    cp /tmp/edge-fpn-demo/report.json "$OUT/demo_report.json" 2>/dev/null
    echo "== benchmarks/gpu_speed.py ${GPU_SPEED_ARGS:-}"
    # shellcheck disable=SC2086
    timeout 240 "$PYTHON" benchmarks/gpu_speed.py ${GPU_SPEED_ARGS:-} 2>&1 | tee "$OUT/gpu_speed.log"
    nvidia-smi --query-gpu=name,memory.used --format=csv
    ;;
*)
    sed -n 2,15p "$0"; exit 2
    ;;
esac
