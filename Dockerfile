FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/sagad
WORKDIR /src
COPY . .
RUN /opt/sagad/bin/pip install .

# Only the installed venv reaches the final image, not the source tree or build leftovers.
FROM python:3.11-slim
COPY --from=build /opt/sagad /opt/sagad
ENV PATH=/opt/sagad/bin:$PATH PYTHONUNBUFFERED=1
RUN useradd --create-home sagad
USER sagad
WORKDIR /home/sagad
EXPOSE 9464
ENTRYPOINT ["sagad"]
CMD ["run"]
