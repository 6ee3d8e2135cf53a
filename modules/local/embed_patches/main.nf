process EMBED_PATCHES {
    tag "${meta.id}"
    label 'process_gpu'

    input:
    tuple val(meta), path(spots), path(image, stageAs: 'image/*')
    path(weights, stageAs: 'weights/*')

    output:
    tuple val(meta), path("${prefix}.patches.parquet"), emit: patches
    tuple val(meta), path("${prefix}.patches_qc.png"), emit: qc
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    def weights_arg = weights ? "--weights ${weights}" : ''
    """
    senca embed-patches \\
        --spots ${spots} \\
        --image ${image} \\
        ${weights_arg} \\
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
    touch ${prefix}.patches.parquet ${prefix}.patches_qc.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
