# Rewrites every CUDA launch `name<<<grid, block, smem, stream>>>(args)` in a .cu file as
# `emu_launch(dim3(grid), dim3(block), smem, stream, "file:line name", [&]() { name(args); })` for the host
# emulation (tools/cuda_emu/run.sh). A launch without smem or stream gets 0 / nullptr (the legacy default
# stream), which the shim reports: every cnnkit launch must name the caller's stream.
# Usage: launch_to_call.py in.cu out.cc
import os
import re
import sys
src = open(sys.argv[1]).read()
out, i = [], 0
pat = re.compile(r'([A-Za-z_][\w:]*(?:<[^;{}]*?>)?)\s*<<<(.*?)>>>\s*\(', re.S)
while True:
    m = pat.search(src, i)
    if not m:
        out.append(src[i:])
        break
    out.append(src[i:m.start()])
    name, cfg = m.group(1), m.group(2)
    # top-level split of the launch configuration
    parts, depth, cur = [], 0, ''
    for ch in cfg:
        if ch in '([{':
            depth += 1
        if ch in ')]}':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    parts.append(cur)
    # find matching paren of the argument list
    j, depth = m.end(), 1
    while depth:
        if src[j] == '(':
            depth += 1
        elif src[j] == ')':
            depth -= 1
        j += 1
    args = src[m.end():j-1]
    smem = parts[2].strip() if len(parts) > 2 else '0'
    stream = parts[3].strip() if len(parts) > 3 else 'nullptr'
    where = f'{os.path.basename(sys.argv[1])}:{src.count(chr(10), 0, m.start()) + 1} {name.strip()}'
    out.append(f'emu_launch(dim3({parts[0]}), dim3({parts[1]}), size_t({smem}), {stream}, "{where}", '
               f'[&]() {{ {name}({args}); }})')
    i = j
open(sys.argv[2], 'w').write(''.join(out))
