process MARKERS {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(clusters), path(h5ad)

    output:
    tuple val(meta), path("${prefix}.markers.parquet"), emit: markers
    tuple val(meta), path("${prefix}.markers.png"), emit: figure
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    senca markers \\
        --clusters ${clusters} \\
        --h5ad ${h5ad} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.markers.parquet ${prefix}.markers.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
