import os

os.environ.setdefault("AET_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")
