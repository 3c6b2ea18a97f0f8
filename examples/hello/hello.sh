#!/bin/sh
# Prints a greeting and a few facts proving it runs inside the container.
echo "$GREETING, $1!"
echo "user: $(id -u):$(id -g), cwd: $(pwd), hostname: $(hostname)"
cat /app/build-info
